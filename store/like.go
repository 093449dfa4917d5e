package store

import "strings"

// likeEscaper escapes LIKE wildcards with "!", which both SQLite and MySQL accept as the ESCAPE
// character without quoting trouble (a backslash means different things to each).
var likeEscaper = strings.NewReplacer(`!`, `!!`, `%`, `!%`, `_`, `!_`)

// LikePrefix is a LIKE pattern (used with ESCAPE '!') matching values that start with s.
func LikePrefix(s string) string { return likeEscaper.Replace(s) + "%" }

// LikeContains is a LIKE pattern (used with ESCAPE '!') matching values that contain s.
func LikeContains(s string) string { return "%" + likeEscaper.Replace(s) + "%" }
