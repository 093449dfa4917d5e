package registry

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/policypush/policypush/store"
)

// Issue is one problem found in an import file. Line is the 1-based line of the file (the header is
// line 1; for XLSX the sheet row); Column is the catalog key, or empty when the whole line is at
// fault. Warning issues do not stop the row from being imported.
//
// The same Issue describes a record from every door: Unit says whether Line counts file lines,
// objects of a change message ("firm", Column is then the JSON key) or rows of the SQL source; Code
// is the record's credit code when known, so a message about a change names the firm.
type Issue struct {
	Line    int
	Unit    string // UnitLine (or empty), UnitFirm, UnitRow
	Column  string
	Code    string
	Value   string
	Reason  string
	Warning bool
}

// String renders the issue for the person who has to fix the source, e.g.
// `line 12, column insured_employees: "abc" is not a whole number` or
// `firm 2 (91320594MA1XYZ1234), key employees: "-3" is negative; counts cannot be`.
func (i Issue) String() string {
	var b strings.Builder
	if i.Warning {
		b.WriteString("warning: ")
	}
	at := Position{Unit: i.Unit, N: i.Line}
	b.WriteString(at.String())
	if i.Code != "" && i.Unit != "" && i.Unit != UnitLine {
		fmt.Fprintf(&b, " (%s)", i.Code)
	}
	if i.Column != "" {
		fmt.Fprintf(&b, ", %s %s", at.cellWord(), i.Column)
	}
	b.WriteString(": ")
	if i.Value != "" {
		fmt.Fprintf(&b, "%q ", i.Value)
	}
	b.WriteString(i.Reason)
	return b.String()
}

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
	decimalRe = regexp.MustCompile(`^[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?$|^\.[0-9]+([eE][+-]?[0-9]+)?$`)
	regionRe  = regexp.MustCompile(`^[0-9]{6}$`)
	// The section letter is optional: statistics and many registration exports write the 4-digit
	// class alone, and the letter follows from the 2-digit division.
	industryRe = regexp.MustCompile(`^([A-T]?)([0-9]{2,4})$`)
	// Excel keeps an all-digit credit code typed into a number cell as a rounded float.
	sciNumberRe = regexp.MustCompile(`^[0-9](\.[0-9]+)?E\+[0-9]+$`)
)

// dateLayouts are tried in order; the last two are what a change message or a SQL DATETIME column
// carries (the time of day is dropped: a founding date is a calendar day).
var dateLayouts = []string{"2006-1-2", "2006/1/2", "20060102", "2006年1月2日", time.RFC3339, time.DateTime}

// excelEpoch is day 0 of Excel's 1900 date system. Serial numbers from 61 (1900-03-01) on count from
// it; lower ones are off by one because of Excel's fictitious 1900-02-29, and are rejected anyway.
var excelEpoch = time.Date(1899, 12, 30, 0, 0, 0, 0, time.UTC)

// ParseRecord turns one data line of an import file into an Enterprise, as a new firm. Header cells
// are catalog keys (trimmed, case-insensitive), Chinese labels or their common synonyms; columns
// the catalog does not know are ignored (the importer reports them once). An empty cell leaves the
// field's default. ok is false when any cell is malformed or a required field is missing; issues
// then hold one entry per problem, so the whole row can be fixed at once. A credit code that fails
// only its checksum is a warning: the row is kept with CodeWarning set.
func ParseRecord(header []string, rec []string, line int) (e store.Enterprise, issues []Issue, ok bool) {
	l := newLayout(header, nil)
	r, issues, ok := l.parse(rec, Position{N: line})
	if !ok {
		return store.Enterprise{Status: store.StatusActive, SpecializedLevel: "none"}, issues, false
	}
	e, more, ok := r.Apply(nil)
	return e, append(issues, more...), ok
}

// parse checks one line against the layout: every cell through its column's rules.
func (l *layout) parse(rec []string, at Position) (Record, []Issue, bool) {
	r := Record{At: at}
	if l.err != nil {
		return r, []Issue{{Line: at.N, Unit: at.Unit, Reason: l.err.Error()}}, false
	}
	if len(rec) != len(l.cols) {
		return r, []Issue{{Line: at.N, Unit: at.Unit, Reason: fmt.Sprintf("has %d fields but the header has %d; %s skipped", len(rec), len(l.cols), at.word())}}, false
	}
	var issues []Issue
	for _, k := range l.missing {
		reason := "is required but the header has no such column"
		if at.Unit == UnitFirm {
			reason = "is required but not given"
		}
		issues = append(issues, Issue{Line: at.N, Unit: at.Unit, Column: k, Reason: reason})
	}
	for i, b := range l.cols {
		if b.column == nil {
			continue
		}
		raw := strings.TrimSpace(rec[i])
		v, reason, warning := b.parse(raw)
		if reason != "" {
			shown := raw
			if fx, ok := strings.CutPrefix(raw, formulaMark); ok {
				shown = "=" + fx
			}
			issues = append(issues, Issue{Line: at.N, Unit: at.Unit, Column: b.Key, Value: shown, Reason: reason, Warning: warning})
		}
		if reason != "" && !warning {
			continue
		}
		if b.Key == "credit_code" {
			r.CreditCode, _ = v.(string)
			r.CodeWarning = warning
			continue
		}
		r.cols = append(r.cols, b.column)
		r.vals = append(r.vals, v)
	}
	for i := range issues {
		issues[i].Code = r.CreditCode
	}
	for _, is := range issues {
		if !is.Warning {
			return r, issues, false
		}
	}
	return r, issues, true
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
		return parseIndustry(raw)
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
	t = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	if today := time.Now().UTC(); t.After(today) {
		return nil, "is in the future", false
	}
	return t, "", false
}
