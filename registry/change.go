package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
)

// ParseChanges reads a change message of the data-sharing platform (the HTTP change API and the
// NATS change subject): a JSON object, an array of objects, or {"firms": [...]}, keyed by catalog
// keys (or their Chinese labels), each object with credit_code. Every value goes through the same
// cell checks as an import file: a JSON string, number or boolean is read as the cell's text, null
// as an empty cell; keys absent keep the stored values (a department sends its own fields).
//
// Objects with bad values (or without credit_code) are returned as issues (unit "firm", the key as
// column) and left out; the error, wrapping ErrBadChange, is for a message that holds no firm at
// all: not JSON, empty ([], null, {}), or no object with a valid credit code.
func ParseChanges(payload []byte) ([]Record, []Issue, error) {
	objs, err := changeObjects(payload)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadChange, err)
	}
	if len(objs) == 0 {
		return nil, nil, fmt.Errorf("%w: the message holds no firm; send an object with credit_code, an array of them or {\"firms\": [...]}", ErrBadChange)
	}
	var recs []Record
	var issues []Issue
	for i, o := range objs {
		r, is, ok := parseChange(o, Position{Unit: UnitFirm, N: i + 1})
		issues = append(issues, is...)
		if ok {
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 && !slices.ContainsFunc(issues, func(is Issue) bool { return is.Code != "" }) {
		return nil, issues, fmt.Errorf("%w: no firm has a valid credit_code (%s)", ErrBadChange, issues[0].String())
	}
	return recs, issues, nil
}

func changeObjects(payload []byte) ([]map[string]json.RawMessage, error) {
	trimmed := bytes.TrimSpace(payload)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("the message is empty")
	}
	var objs []map[string]json.RawMessage
	if trimmed[0] == '{' {
		var one map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &one); err != nil {
			return nil, err
		}
		list, ok := one["firms"]
		switch {
		case ok && len(one) == 1:
			if err := json.Unmarshal(list, &objs); err != nil {
				return nil, fmt.Errorf("firms: %v", err)
			}
		case len(one) > 0:
			objs = []map[string]json.RawMessage{one}
		}
		return objs, nil
	}
	if err := json.Unmarshal(trimmed, &objs); err != nil {
		return nil, err
	}
	return objs, nil
}

// parseChange reads one object as a one-line file whose header is its keys (sorted, so messages
// come in a stable order).
func parseChange(o map[string]json.RawMessage, at Position) (Record, []Issue, bool) {
	keys := make([]string, 0, len(o))
	for k := range o {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	rec := make([]string, len(keys))
	var issues []Issue
	for i, k := range keys {
		v, err := cellText(o[k])
		if err != nil {
			issues = append(issues, Issue{Line: at.N, Unit: at.Unit, Column: k, Reason: err.Error()})
		}
		rec[i] = v
	}
	l := newLayout(keys, nil)
	l.missing = slices.DeleteFunc(l.missing, func(k string) bool { return k != "credit_code" }) // a change may leave the name as stored
	for _, u := range l.unknown {
		issues = append(issues, Issue{Line: at.N, Unit: at.Unit, Column: u.Column, Reason: "is not a registry field (see GET /api/v1/fields or `policypush fields`)"})
	}
	r, more, ok := l.parse(rec, at)
	issues = append(issues, more...)
	for i := range issues {
		issues[i].Code = r.CreditCode
	}
	for _, is := range issues {
		if !is.Warning {
			ok = false
		}
	}
	return r, issues, ok
}

// cellText is the text of a JSON scalar as a file cell would hold it.
func cellText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		return s, nil
	case '{', '[':
		return "", fmt.Errorf("is an %s; give a single value", map[byte]string{'{': "object", '[': "array"}[raw[0]])
	case 't', 'f':
		b, err := strconv.ParseBool(string(raw))
		if err != nil {
			return "", fmt.Errorf("is not JSON")
		}
		return strconv.FormatBool(b), nil
	}
	return string(raw), nil // a JSON number, in its own digits (no float rounding)
}
