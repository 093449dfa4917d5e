package rules

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// DiffLine is one line of a line-by-line comparison: Op is " " (both), "-" (only the old) or "+".
type DiffLine struct {
	Op   string `json:"op"`
	Text string `json:"text"`
}

// Change is one field that differs between two versions. Multi-line text (the rule) comes with a
// line diff.
type Change struct {
	Field string     `json:"field"` // title, params.rate, eligibility, tests[2], …
	Old   string     `json:"old"`
	New   string     `json:"new"`
	Lines []DiffLine `json:"lines,omitempty"`
}

// DiffDefinitions lists the fields that differ, in field order.
func DiffDefinitions(a, b *Definition) []Change {
	fa, fb := flatDefinition(a), flatDefinition(b)
	keys := make([]string, 0, len(fa)+len(fb))
	for k := range fa {
		keys = append(keys, k)
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		oi, oj := fieldRank(topKey(keys[i])), fieldRank(topKey(keys[j]))
		if oi != oj {
			return oi < oj
		}
		return keys[i] < keys[j]
	})
	var out []Change
	for _, k := range keys {
		if fa[k] == fb[k] {
			continue
		}
		c := Change{Field: k, Old: fa[k], New: fb[k]}
		if strings.Contains(c.Old, "\n") || strings.Contains(c.New, "\n") {
			c.Lines = diffLines(strings.Split(strings.TrimRight(c.Old, "\n"), "\n"), strings.Split(strings.TrimRight(c.New, "\n"), "\n"))
		}
		out = append(out, c)
	}
	return out
}

func topKey(k string) string {
	return strings.FieldsFunc(k, func(r rune) bool { return r == '.' || r == '[' })[0]
}

// definitionOrder lists the top-level keys of a definition in the order of its struct, so a diff
// reads like the file.
var definitionOrder = []string{"id", "title", "doc_no", "department", "category", "effective_from", "effective_to",
	"params", "eligibility", "amount", "excludes", "priority", "once_per", "channels", "summary", "interpretation",
	"deadline", "contact", "source_url", "tests"}

func fieldRank(key string) int {
	for i, k := range definitionOrder {
		if k == key {
			return i
		}
	}
	return len(definitionOrder)
}

// flatDefinition renders a definition as field path → text: params one per key, tests one per case.
func flatDefinition(d *Definition) map[string]string {
	var m map[string]any
	_ = json.Unmarshal(d.Canonical(), &m)
	out := map[string]string{}
	for k, v := range m {
		switch x := v.(type) {
		case string:
			out[k] = x
		case map[string]any:
			for pk, pv := range x {
				out[k+"."+pk] = compactJSON(pv)
			}
		case []any:
			if k == "tests" {
				for i, t := range x {
					out[fmt.Sprintf("tests[%d]", i)] = compactJSON(t)
				}
				continue
			}
			out[k] = compactJSON(x)
		default:
			out[k] = compactJSON(x)
		}
	}
	return out
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// diffLines is a longest-common-subsequence line diff (rules are short: quadratic is fine).
func diffLines(a, b []string) []DiffLine {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []DiffLine
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case a[i] == b[j]:
			out = append(out, DiffLine{" ", a[i]})
			i, j = i+1, j+1
		case lcs[i+1][j] >= lcs[i][j+1]:
			out = append(out, DiffLine{"-", a[i]})
			i++
		default:
			out = append(out, DiffLine{"+", b[j]})
			j++
		}
	}
	for ; i < n; i++ {
		out = append(out, DiffLine{"-", a[i]})
	}
	for ; j < m; j++ {
		out = append(out, DiffLine{"+", b[j]})
	}
	return out
}
