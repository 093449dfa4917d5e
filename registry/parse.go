package registry

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/policypush/policypush/store"
)

// Issue is one problem found in an import file. Line is the 1-based line of the file (the header is
// line 1; for XLSX the sheet row); Column is the catalog key, or empty when the whole line is at
// fault. Warning issues do not stop the row from being imported.
type Issue struct {
	Line    int
	Column  string
	Value   string
	Reason  string
	Warning bool
}

// String renders the issue for the person who has to fix the file, e.g.
// `line 12, column insured_employees: "abc" is not a whole number`.
func (i Issue) String() string {
	var b strings.Builder
	if i.Warning {
		b.WriteString("warning: ")
	}
	fmt.Fprintf(&b, "line %d", i.Line)
	if i.Column != "" {
		fmt.Fprintf(&b, ", column %s", i.Column)
	}
	b.WriteString(": ")
	if i.Value != "" {
		fmt.Fprintf(&b, "%q ", i.Value)
	}
	b.WriteString(i.Reason)
	return b.String()
}

// Keys the importer cannot do without: the upsert key and the name every notice shows.
var requiredKeys = []string{"credit_code", "name"}

// enumAliases maps the Chinese wording departments export to stored enum values (matched exactly,
// after trimming). The stored English values themselves match case-insensitively.
var enumAliases = map[string]map[string]string{
	"status": {
		"存续": store.StatusActive, "在业": store.StatusActive, "在营": store.StatusActive,
		"开业": store.StatusActive, "在册": store.StatusActive,
		// the national enterprise credit publicity system writes the status this way
		"存续（在营、开业、在册）": store.StatusActive,
		"吊销":           store.StatusRevoked,
		"吊销，未注销":       store.StatusRevoked,
		"注销":           store.StatusDeregistered,
		"吊销，已注销":       store.StatusDeregistered,
		"迁出":           store.StatusMovedOut,
	},
	"taxpayer_type":     {"一般纳税人": "general", "小规模纳税人": "small_scale"},
	"specialized_level": {"无": "none", "省级": "province", "国家级": "national"},
}

var (
	digitsRe = regexp.MustCompile(`^[0-9]+$`)
	// Plain decimals, optionally in scientific notation because spreadsheets store large and small
	// numbers that way. No thousands separators, currency signs, percentages, hex, NaN or Inf:
	// guessing what "1,234" or "5%" meant is how wrong money gets paid.
	decimalRe  = regexp.MustCompile(`^[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?$|^\.[0-9]+([eE][+-]?[0-9]+)?$`)
	regionRe   = regexp.MustCompile(`^[0-9]{6}$`)
	industryRe = regexp.MustCompile(`^[A-T][0-9]{2,4}$`)
	// Excel keeps an all-digit credit code typed into a number cell as a rounded float.
	sciNumberRe = regexp.MustCompile(`^[0-9](\.[0-9]+)?E\+[0-9]+$`)
)

var dateLayouts = []string{"2006-1-2", "2006/1/2", "20060102"}

// excelEpoch is day 0 of Excel's 1900 date system. Serial numbers from 61 (1900-03-01) on count from
// it; lower ones are off by one because of Excel's fictitious 1900-02-29, and are rejected anyway.
var excelEpoch = time.Date(1899, 12, 30, 0, 0, 0, 0, time.UTC)

// layout is a parsed header: which catalog column each file column feeds.
type layout struct {
	cols    []*column // by file column; nil for a column the catalog does not know
	unknown []Issue   // one warning per unknown header cell
	missing []string  // required keys the header lacks
	err     error     // the header itself is unusable (a key appears twice)
}

// headerNames maps every accepted header spelling to its binding: the key in lowercase, and the
// Chinese label, since departments export with either.
var headerNames = sync.OnceValue(func() map[string]*column {
	cols := columns()
	m := make(map[string]*column, 2*len(cols))
	for i := range cols {
		m[cols[i].Key] = &cols[i]
		m[cols[i].Label] = &cols[i]
	}
	return m
})

func newLayout(header []string) layout {
	l := layout{cols: make([]*column, len(header))}
	seen := map[string]int{}
	for i, h := range header {
		if i == 0 {
			h = strings.TrimPrefix(h, "\uFEFF") // Excel's "CSV UTF-8" starts with a byte-order mark
		}
		h = strings.TrimSpace(h)
		c := headerNames()[strings.ToLower(h)]
		if c == nil {
			l.unknown = append(l.unknown, Issue{Line: 1, Column: h, Reason: fmt.Sprintf("header column %d is not a catalog field; its values are ignored", i+1), Warning: true})
			continue
		}
		if j, dup := seen[c.Key]; dup && l.err == nil {
			l.err = fmt.Errorf("header columns %d and %d both map to %s; remove one", j+1, i+1, c.Key)
		}
		seen[c.Key] = i
		l.cols[i] = c
	}
	for _, k := range requiredKeys {
		if _, ok := seen[k]; !ok {
			l.missing = append(l.missing, k)
		}
	}
	return l
}

// ParseRecord turns one data line of an import file into an Enterprise. Header cells are catalog
// keys (trimmed, case-insensitive) or Chinese labels; columns the catalog does not know are ignored
// (the importer reports them once). An empty cell leaves the zero value, except status (active) and
// specialized_level (none). ok is false when any cell is malformed; issues then hold one entry per
// bad cell, so the whole row can be fixed at once. A credit code that fails only its checksum is a
// warning: the row is kept with CodeWarning set.
func ParseRecord(header []string, rec []string, line int) (e store.Enterprise, issues []Issue, ok bool) {
	l := newLayout(header)
	return l.parse(rec, line)
}

func (l *layout) parse(rec []string, line int) (store.Enterprise, []Issue, bool) {
	e := store.Enterprise{Status: store.StatusActive, SpecializedLevel: "none"}
	if l.err != nil {
		return e, []Issue{{Line: line, Reason: l.err.Error()}}, false
	}
	if len(rec) != len(l.cols) {
		return e, []Issue{{Line: line, Reason: fmt.Sprintf("has %d fields but the header has %d; line skipped", len(rec), len(l.cols))}}, false
	}
	var issues []Issue
	for _, k := range l.missing {
		issues = append(issues, Issue{Line: line, Column: k, Reason: "is required but the header has no such column"})
	}
	ev := reflect.ValueOf(&e).Elem()
	for i, c := range l.cols {
		if c == nil {
			continue
		}
		raw := strings.TrimSpace(rec[i])
		v, reason, warning := c.parse(raw)
		if reason != "" {
			issues = append(issues, Issue{Line: line, Column: c.Key, Value: raw, Reason: reason, Warning: warning})
		}
		if v != nil && (reason == "" || warning) {
			c.set(ev, v)
		}
		if warning && c.Key == "credit_code" {
			e.CodeWarning = true
		}
	}
	for _, is := range issues {
		if !is.Warning {
			return e, issues, false
		}
	}
	return e, issues, true
}

// parse checks one trimmed cell. v is nil for an empty cell; reason is empty when the value is fine;
// warning marks a reason that does not reject the row.
func (c *column) parse(raw string) (v any, reason string, warning bool) {
	if raw == "" {
		for _, k := range requiredKeys {
			if c.Key == k {
				return nil, "is required but empty", false
			}
		}
		return nil, "", false
	}
	if !utf8.ValidString(raw) {
		return nil, "is not valid UTF-8 text; if the file was saved by Excel, save it as \"CSV UTF-8\" or .xlsx", false
	}
	switch c.Type {
	case TypeString:
		return c.parseString(raw)
	case TypeEnum:
		return c.parseEnum(raw)
	case TypeInt:
		return parseCount(raw)
	case TypeFloat:
		return c.parseAmount(raw)
	case TypeBool:
		return parseBool(raw)
	case TypeDate:
		return parseDate(raw)
	}
	return nil, "has a catalog type the importer does not know: " + c.Type, false
}

func (c *column) parseString(raw string) (any, string, bool) {
	switch c.Key {
	case "credit_code":
		code := strings.ToUpper(raw)
		checksumOK, err := CheckCreditCode(code)
		if err != nil {
			reason := "is not a credit code: " + err.Error()
			if sciNumberRe.MatchString(code) {
				reason += "; it looks like a number rounded by Excel, format the column as text and re-enter the codes"
			}
			return nil, reason, false
		}
		if !checksumOK {
			want, _ := CreditCodeCheckChar(code[:creditCodeLen-1])
			return code, fmt.Sprintf("fails the GB 32100 checksum (check character would be %c); kept and flagged, as some early pilot codes are", want), true
		}
		return code, "", false
	case "region_code":
		if !regionRe.MatchString(raw) {
			return nil, "is not a region code: write the 6-digit GB/T 2260 county code, e.g. 320571", false
		}
	case "industry_code":
		code := strings.ToUpper(raw)
		if !industryRe.MatchString(code) {
			return nil, "is not a GB/T 4754-2017 industry code: write the section letter and 2–4 digits, e.g. C3911", false
		}
		return code, "", false
	}
	// The codes above are bounded by their format; free text by the column, which MySQL would
	// otherwise refuse for the whole batch.
	if n := utf8.RuneCountInString(raw); c.maxLen > 0 && n > c.maxLen {
		return nil, fmt.Sprintf("has %d characters, at most %d fit", n, c.maxLen), false
	}
	return raw, "", false
}

func (c *column) parseEnum(raw string) (any, string, bool) {
	for _, v := range c.Enum {
		if strings.EqualFold(raw, v) {
			return v, "", false
		}
	}
	if v, ok := enumAliases[c.Key][raw]; ok {
		return v, "", false
	}
	return nil, fmt.Sprintf("is not one of %s", strings.Join(c.Enum, ", ")), false
}

// parseCount accepts digits only: a thousands separator is rejected rather than guessed at, the
// same rule as for amounts.
func parseCount(raw string) (any, string, bool) {
	if !digitsRe.MatchString(raw) {
		switch {
		case strings.HasPrefix(raw, "-") && digitsRe.MatchString(raw[1:]):
			return nil, "is negative; counts cannot be", false
		case strings.Contains(raw, ","):
			return nil, "is not a whole number: write digits only, without thousands separators", false
		}
		return nil, "is not a whole number", false
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return nil, "is too large", false
	}
	return n, "", false
}

func (c *column) parseAmount(raw string) (any, string, bool) {
	if !decimalRe.MatchString(raw) {
		switch {
		case strings.HasPrefix(raw, "-") && decimalRe.MatchString(raw[1:]):
			return nil, "is negative; amounts and rates cannot be", false
		case strings.Contains(raw, ","):
			return nil, "is not a number: write a plain decimal such as 1234567.89, without thousands separators", false
		case strings.HasSuffix(raw, "%"):
			return nil, "is a percentage: write it as a decimal fraction, e.g. 0.055 for 5.5%", false
		}
		return nil, "is not a number: write a plain decimal such as 1234567.89", false
	}
	f, err := strconv.ParseFloat(raw, 64)
	if err != nil || math.IsInf(f, 0) {
		return nil, "is out of range", false
	}
	if c.Key == "layoff_rate" && f > 1 {
		return nil, "is above 1: the layoff rate is a fraction between 0 and 1 (0.055 = 5.5%)", false
	}
	return f, "", false
}

func parseBool(raw string) (any, string, bool) {
	switch strings.ToLower(raw) {
	case "true", "1", "yes", "y", "是":
		return true, "", false
	case "false", "0", "no", "n", "否":
		return false, "", false
	}
	return nil, "is not a yes/no value: write true/false, 1/0, yes/no, Y/N or 是/否", false
}

// parseDate accepts ISO and slash dates, compact yyyymmdd, and Excel serial day numbers (what an
// .xlsx date cell holds; 5 digits cannot be confused with yyyymmdd). Dates are in UTC with no time.
func parseDate(raw string) (any, string, bool) {
	var t time.Time
	var err error
	if len(raw) <= 5 && digitsRe.MatchString(raw) {
		n, _ := strconv.Atoi(raw)
		if n < 61 {
			return nil, "is not a date: write it as 2006-01-02", false
		}
		t = excelEpoch.AddDate(0, 0, n)
	} else {
		for _, layout := range dateLayouts {
			if t, err = time.Parse(layout, raw); err == nil {
				break
			}
		}
		if err != nil {
			return nil, "is not a date: write it as 2006-01-02 (2006/01/02 and 20060102 also work)", false
		}
	}
	if t.Year() < 1900 {
		return nil, "is before 1900; check the year", false
	}
	if today := time.Now().UTC(); t.After(today) {
		return nil, "is in the future", false
	}
	return t, "", false
}
