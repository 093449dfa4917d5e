package store

import (
	"encoding/json"
	"strings"

	"gorm.io/gorm"
)

// likeEscaper escapes LIKE wildcards with "!", which both SQLite and MySQL accept as the ESCAPE
// character without quoting trouble (a backslash means different things to each).
var likeEscaper = strings.NewReplacer(`!`, `!!`, `%`, `!%`, `_`, `!_`)

// LikePrefix is a LIKE pattern (used with ESCAPE '!') matching values that start with s.
func LikePrefix(s string) string { return likeEscaper.Replace(s) + "%" }

// LikeContains is a LIKE pattern (used with ESCAPE '!') matching values that contain s.
func LikeContains(s string) string { return "%" + likeEscaper.Replace(s) + "%" }

// WherePrefix narrows q to rows whose column col starts with prefix. MySQL reads a LIKE with a
// constant prefix as a range of the column's index; SQLite does so only for case-insensitive
// indexes, and otherwise scans the whole index (every firm of the province for a city's count).
// On SQLite the same rows are therefore also bounded by a range in byte order, which its planner
// does take: col >= prefix AND col < prefix with its last byte raised.
func WherePrefix(q *gorm.DB, col, prefix string) *gorm.DB {
	q = q.Where(col+" LIKE ? ESCAPE '!'", LikePrefix(prefix))
	if prefix == "" || q.Dialector.Name() != "sqlite" {
		return q
	}
	hi := []byte(prefix)
	for i := len(hi) - 1; i >= 0; i-- {
		if hi[i] < 0xff {
			hi[i]++
			return q.Where(col+" >= ? AND "+col+" < ?", prefix, string(hi[:i+1]))
		}
	}
	return q.Where(col+" >= ?", prefix)
}

// inList is "(…)" and its arguments for "col IN …" over vals (strings or ids) on tx's database:
// one JSON array through json_each on SQLite (the pure-Go driver binds parameters in time
// quadratic in their number), a placeholder per value on MySQL.
func inList[T string | uint64](tx *gorm.DB, vals []T) (string, []any) {
	if tx.Dialector.Name() == "sqlite" {
		b, _ := json.Marshal(vals) // strings and integers always encode
		return "(SELECT value FROM json_each(?))", []any{string(b)}
	}
	args := make([]any, len(vals))
	for i, v := range vals {
		args[i] = v
	}
	return "(?" + strings.Repeat(",?", len(vals)-1) + ")", args
}
