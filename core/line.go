package core

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// MatchLine is one row of a matches export, scanned straight from the cursor. A query selects any
// of these columns (by these names): match_id, credit_code, name, region_code, industry_code,
// park_id, contact_phone, policy_id, policy_version, policy_title, amount, as_of, matched_at,
// notify, opened, response, employees, annual_revenue, total_assets. NULL reads as the zero
// value (Amount: nil).
type MatchLine struct {
	MatchID                                                          uint64
	CreditCode, Name, RegionCode, IndustryCode, ParkID, ContactPhone string
	PolicyID, PolicyTitle                                            string
	PolicyVersion                                                    int64
	Amount                                                           *float64 // points into the line; nil: no amount
	AsOf, MatchedAt                                                  time.Time
	Notify, Response                                                 string
	Opened                                                           bool
	Employees                                                        int64
	AnnualRevenue, TotalAssets                                       float64

	amount float64
}

func (m *MatchLine) reset() {
	amount := m.amount
	*m = MatchLine{}
	m.amount = amount
}

// bind returns the scan destinations of the columns, in their order.
func (m *MatchLine) bind(cols []string) ([]any, error) {
	dest := make([]any, len(cols))
	for i, c := range cols {
		var d any
		switch c {
		case "match_id":
			d = uintCol{&m.MatchID}
		case "credit_code":
			d = strCol{&m.CreditCode}
		case "name":
			d = strCol{&m.Name}
		case "region_code":
			d = strCol{&m.RegionCode}
		case "industry_code":
			d = strCol{&m.IndustryCode}
		case "park_id":
			d = strCol{&m.ParkID}
		case "contact_phone":
			d = strCol{&m.ContactPhone}
		case "policy_id":
			d = strCol{&m.PolicyID}
		case "policy_version":
			d = intCol{&m.PolicyVersion}
		case "policy_title":
			d = strCol{&m.PolicyTitle}
		case "amount":
			d = amountCol{m}
		case "as_of":
			d = timeCol{&m.AsOf}
		case "matched_at":
			d = timeCol{&m.MatchedAt}
		case "notify":
			d = strCol{&m.Notify}
		case "opened":
			d = boolCol{&m.Opened}
		case "response":
			d = strCol{&m.Response}
		case "employees":
			d = intCol{&m.Employees}
		case "annual_revenue":
			d = floatCol{&m.AnnualRevenue}
		case "total_assets":
			d = floatCol{&m.TotalAssets}
		default:
			return nil, fmt.Errorf("export query selects column %q, which a match line does not have", c)
		}
		dest[i] = d
	}
	return dest, nil
}

// The column scanners take what either driver gives (SQLite: int64, float64, string, time.Time;
// MySQL: []byte, int64, uint64 for unsigned columns, float32/float64, time.Time — the text
// protocol of interpolated statements parses numbers since go-sql-driver/mysql 1.8) without
// reflection. Their type switches look alike on purpose: each writes one Go type straight into the
// line for every row of an export, where a shared conversion through any or reflect would allocate.

type strCol struct{ p *string }

func (c strCol) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*c.p = ""
	case string:
		*c.p = x
	case []byte:
		*c.p = string(x)
	case int64:
		*c.p = strconv.FormatInt(x, 10)
	case uint64:
		*c.p = strconv.FormatUint(x, 10)
	case float64:
		*c.p = strconv.FormatFloat(x, 'f', -1, 64)
	case time.Time:
		*c.p = x.Format(time.RFC3339)
	case bool:
		*c.p = strconv.FormatBool(x)
	default:
		return fmt.Errorf("text column: unexpected %T", v)
	}
	return nil
}

type intCol struct{ p *int64 }

func (c intCol) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*c.p = 0
	case int64:
		*c.p = x
	case uint64:
		if x > math.MaxInt64 {
			return fmt.Errorf("integer column: %d is out of range", x)
		}
		*c.p = int64(x)
	case float64:
		*c.p = int64(x)
	case bool:
		*c.p = 0
		if x {
			*c.p = 1
		}
	case []byte:
		return c.parse(string(x))
	case string:
		return c.parse(x)
	default:
		return fmt.Errorf("integer column: unexpected %T", v)
	}
	return nil
}

func (c intCol) parse(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			return fmt.Errorf("integer column: %q", s)
		}
		n = int64(f)
	}
	*c.p = n
	return nil
}

type uintCol struct{ p *uint64 }

func (c uintCol) Scan(v any) error {
	if u, ok := v.(uint64); ok {
		*c.p = u
		return nil
	}
	var n int64
	if err := (intCol{&n}).Scan(v); err != nil {
		if b, ok := v.([]byte); ok { // above MaxInt64 on MySQL
			u, uerr := strconv.ParseUint(string(b), 10, 64)
			if uerr == nil {
				*c.p = u
				return nil
			}
		}
		return err
	}
	*c.p = uint64(n)
	return nil
}

type floatCol struct{ p *float64 }

func (c floatCol) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*c.p = 0
	case float64:
		*c.p = x
	case float32:
		*c.p = float64(x)
	case int64:
		*c.p = float64(x)
	case uint64:
		*c.p = float64(x)
	case []byte:
		return c.parse(string(x))
	case string:
		return c.parse(x)
	default:
		return fmt.Errorf("number column: unexpected %T", v)
	}
	return nil
}

func (c floatCol) parse(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("number column: %q", s)
	}
	*c.p = f
	return nil
}

type amountCol struct{ m *MatchLine }

func (c amountCol) Scan(v any) error {
	if v == nil {
		c.m.Amount = nil
		return nil
	}
	if err := (floatCol{&c.m.amount}).Scan(v); err != nil {
		return err
	}
	c.m.Amount = &c.m.amount
	return nil
}

type boolCol struct{ p *bool }

func (c boolCol) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*c.p = false
	case bool:
		*c.p = x
	case int64:
		*c.p = x != 0
	case uint64:
		*c.p = x != 0
	case float64:
		*c.p = x != 0
	case []byte:
		return c.parse(string(x))
	case string:
		return c.parse(x)
	default:
		return fmt.Errorf("boolean column: unexpected %T", v)
	}
	return nil
}

func (c boolCol) parse(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("boolean column: %q", s)
	}
	*c.p = b
	return nil
}

type timeCol struct{ p *time.Time }

// timeLayouts are how SQLite stores times as text and MySQL sends them without parseTime.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999", time.DateOnly}

func (c timeCol) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*c.p = time.Time{}
	case time.Time:
		*c.p = x
	case []byte:
		return c.parse(string(x))
	case string:
		return c.parse(x)
	default:
		return fmt.Errorf("time column: unexpected %T", v)
	}
	return nil
}

func (c timeCol) parse(s string) error {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			*c.p = t
			return nil
		}
	}
	return fmt.Errorf("time column: %q", s)
}
