package matcher

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// Bulk insertion of matches without GORM's per-row reflection, on the transaction's connection.
// MySQL: multi-row INSERT statements of 500 rows, prepared once per transaction. SQLite: the pure-Go
// driver prepares a statement again at every execution and binds parameters in time quadratic in
// their number, so a multi-row INSERT costs more per row the larger it is; instead one statement
// with one parameter, a JSON array of rows, inserts a thousand rows through jsonb_each.
// Each database reports the ids of the rows it inserted its own way: SQLite with RETURNING,
// MySQL with the first id of the statement (InnoDB gives a multi-row INSERT consecutive ids in
// its default lock modes; insertMatches checks that rather than trusting it).

// insertRows is how many matches one INSERT carries.
func insertRows(sqlite bool) int {
	if sqlite {
		return 1000
	}
	return 500
}

// sqliteInsert inserts the rows of a JSON array of arrays (the columns of matchColumns, in order);
// a row whose unique key exists is skipped. OR IGNORE rather than ON CONFLICT DO NOTHING: a
// statement that cannot abort half-way needs no statement journal, which SQLite otherwise writes
// for every page the insert touches (measured: a fifth of the time). OR IGNORE would also skip a
// row breaking NOT NULL; readIDs checks that every skipped row exists. No RETURNING either: SQLite
// buffers returned rows in a temporary b-tree per statement, whose pages the pure-Go allocator
// maps and unmaps every time.
const sqliteInsert = "INSERT OR IGNORE INTO matches (" + matchColumns + ") SELECT " +
	"json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]'), " +
	"json_extract(value, '$[4]'), json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'), " +
	"json_extract(value, '$[8]'), json_extract(value, '$[9]'), json_extract(value, '$[10]') FROM jsonb_each(?)"

// sqliteInsertFresh is sqliteInsert for rows that share their state, as-of date, notified flag and
// times (every new match one writer stores does): those are bound once, and the rows are given
// as runs of one policy version and place: a JSON array of {policy_id: {policy_version:
// {region_code: {park_id: {credit_code: amount, ...}}}}}, whose keys and values jsonb_each
// returns as columns, so that no row needs a json_extract (four per row, with each row an array
// [policy_id, policy_version, credit_code, amount], were a seventh of a full match's time;
// json_extract turned the binary form back into values one path at a time). The nested
// table-valued functions run in their order of dependence, so rows are inserted in the order of
// the runs and of each run's members, which is the order of the chunk (sorted by place first:
// placeOrder). jsonb_each rather than json_each: json_each hands each value on as JSON
// text to parse again, jsonb_each in the binary form it parsed the parameter into.
const sqliteInsertFresh = "INSERT OR IGNORE INTO matches (" + matchColumns + ") SELECT " +
	"p.key, v.key, r.key, ?2, r.value, ?3, ?4, ?5, ?6, rg.key, pk.key " +
	"FROM jsonb_each(?1) AS g, jsonb_each(g.value) AS p, jsonb_each(p.value) AS v, " +
	"jsonb_each(v.value) AS rg, jsonb_each(rg.value) AS pk, jsonb_each(pk.value) AS r"

// uniform reports whether the rows share the columns sqliteInsertFresh binds once.
func uniform(chunk []store.Match) bool {
	a := &chunk[0]
	for i := range chunk {
		m := &chunk[i]
		if m.State != a.State || m.Notified != a.Notified || !m.AsOf.Equal(a.AsOf) || !m.MatchedAt.Equal(a.MatchedAt) || !m.UpdatedAt.Equal(a.UpdatedAt) {
			return false
		}
	}
	return true
}

// sqliteFreshRows encodes a chunk's rows in the order order gives (placeOrder; nil: as they are)
// as the JSON parameter of sqliteInsertFresh.
func sqliteFreshRows(chunk []store.Match, order []int) (string, error) {
	b := make([]byte, 0, 32*len(chunk)+64)
	b = append(b, '[')
	var prev *store.Match
	for k := range chunk {
		m := &chunk[k]
		if order != nil {
			m = &chunk[order[k]]
		}
		switch {
		case prev == nil || m.PolicyID != prev.PolicyID || m.PolicyVersion != prev.PolicyVersion:
			if prev != nil {
				b = append(b, "}}}}},"...)
			}
			b = append(b, '{')
			b = appendJSONString(b, m.PolicyID)
			b = append(b, ":{\""...)
			b = strconv.AppendInt(b, int64(m.PolicyVersion), 10)
			b = append(b, "\":{"...)
			b = appendPlace(b, m)
		case m.RegionCode != prev.RegionCode:
			b = append(b, "}},"...)
			b = appendPlace(b, m)
		case m.ParkID != prev.ParkID:
			b = append(b, "},"...)
			b = appendJSONString(b, m.ParkID)
			b = append(b, ":{"...)
		default:
			b = append(b, ',')
		}
		b = appendJSONString(b, m.CreditCode)
		b = append(b, ':')
		switch a := m.Amount; {
		case a == nil:
			b = append(b, "null"...)
		case math.IsNaN(*a) || math.IsInf(*a, 0):
			return "", fmt.Errorf("match %s/%s: amount %v has no JSON form", m.PolicyID, m.CreditCode, *a)
		default:
			b = strconv.AppendFloat(b, *a, 'g', -1, 64)
		}
		prev = m
	}
	if len(chunk) > 0 {
		b = append(b, "}}}}}"...)
	}
	return string(append(b, ']')), nil
}

// appendPlace opens a row's region and park objects.
func appendPlace(b []byte, m *store.Match) []byte {
	b = appendJSONString(b, m.RegionCode)
	b = append(b, ":{"...)
	b = appendJSONString(b, m.ParkID)
	return append(b, ":{"...)
}

// appendJSONString appends s as a JSON string: as it is when it holds nothing to escape (policy
// IDs and credit codes), else through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s) // a string always has a JSON form
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// sqliteTime is how the SQLite driver stores a time.Time (its default write format), so that rows
// inserted here read back like rows GORM inserted.
const sqliteTime = "2006-01-02 15:04:05.999999999-07:00"

// sqliteRows encodes rows as the JSON parameter of sqliteInsert.
func sqliteRows(chunk []store.Match) (string, error) {
	out := make([][11]any, len(chunk))
	for i := range chunk {
		m := &chunk[i]
		notified := 0
		if m.Notified {
			notified = 1
		}
		out[i] = [11]any{m.PolicyID, m.PolicyVersion, m.CreditCode, m.State, m.Amount,
			m.AsOf.Format(sqliteTime), notified, m.MatchedAt.Format(sqliteTime), m.UpdatedAt.Format(sqliteTime), m.RegionCode, m.ParkID}
	}
	b, err := json.Marshal(out)
	return string(b), err
}

const matchColumns = "policy_id, policy_version, credit_code, state, amount, as_of, notified, matched_at, updated_at, region_code, park_id"

func matchValues(m *store.Match) []any {
	return []any{m.PolicyID, m.PolicyVersion, m.CreditCode, m.State, m.Amount, m.AsOf, m.Notified, m.MatchedAt, m.UpdatedAt, m.RegionCode, m.ParkID}
}

// matchKey identifies a match row by its unique key.
type matchKey struct {
	policy  string
	version int
	code    string
}

// insertMatches inserts rows, placed (store.PlaceMatches), in tx and sets each row's ID. On SQLite a row whose (policy, version,
// firm) another writer stored meanwhile is skipped and keeps ID 0 (that writer announced it); on
// MySQL such a conflict fails the transaction, which the caller retries with a fresh diff.
func insertMatches(tx *gorm.DB, rows []store.Match) error { return insertEncoded(tx, rows, nil) }

// freshChunk is a SQLite statement's rows encoded for sqliteInsertFresh: param, "" when the
// chunk's rows are not uniform (sqliteInsert then), and the order the rows go in (placeOrder).
type freshChunk struct {
	param string
	order []int
}

// encodeFresh encodes each SQLite insert of rows (insertRows per statement): work a full match
// does for the next transaction while the current one runs.
func encodeFresh(rows []store.Match) ([]freshChunk, error) {
	per := insertRows(true)
	out := make([]freshChunk, 0, (len(rows)+per-1)/per)
	for lo := 0; lo < len(rows); lo += per {
		c, err := encodeChunk(rows[lo:min(lo+per, len(rows))])
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// encodeChunk is encodeFresh of one statement's rows.
func encodeChunk(chunk []store.Match) (freshChunk, error) {
	if !uniform(chunk) {
		return freshChunk{}, nil
	}
	order := placeOrder(chunk)
	param, err := sqliteFreshRows(chunk, order)
	return freshChunk{param: param, order: order}, err
}

// placeOrder is the order of a chunk's rows sorted by policy, version, region code and park,
// each group's rows in chunk order (sqliteInsertFresh takes runs of rows sharing them); nil when
// they are in that order already.
func placeOrder(chunk []store.Match) []int {
	byPlace := func(a, b *store.Match) int {
		return cmp.Or(cmp.Compare(a.PolicyID, b.PolicyID), cmp.Compare(a.PolicyVersion, b.PolicyVersion),
			cmp.Compare(a.RegionCode, b.RegionCode), cmp.Compare(a.ParkID, b.ParkID))
	}
	sorted := true
	for i := 1; i < len(chunk) && sorted; i++ {
		sorted = byPlace(&chunk[i-1], &chunk[i]) <= 0
	}
	if sorted {
		return nil
	}
	order := make([]int, len(chunk))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return byPlace(&chunk[a], &chunk[b]) })
	return order
}

// insertEncoded is insertMatches taking the SQLite statements' rows from enc when not nil
// (encodeFresh of the same rows).
func insertEncoded(tx *gorm.DB, rows []store.Match, enc []freshChunk) error {
	if len(rows) == 0 {
		return nil
	}
	ctx := tx.Statement.Context
	if ctx == nil {
		ctx = context.Background()
	}
	conn := tx.Statement.ConnPool
	sqlite := tx.Dialector.Name() == "sqlite"
	per := insertRows(sqlite)
	var full *sql.Stmt
	consecutive := !sqlite && consecutiveIDs(ctx, conn)
	for lo := 0; lo < len(rows); lo += per {
		chunk := rows[lo:min(lo+per, len(rows))]
		if sqlite {
			var c freshChunk
			if enc != nil {
				c = enc[lo/per]
			} else {
				var err error
				if c, err = encodeChunk(chunk); err != nil {
					return fmt.Errorf("insert matches: %w", err)
				}
			}
			if err := insertJSON(ctx, conn, chunk, c); err != nil {
				return fmt.Errorf("insert matches: %w", err)
			}
			continue
		}
		q := insertSQL(len(chunk))
		args := make([]any, 0, len(chunk)*11)
		for i := range chunk {
			args = append(args, matchValues(&chunk[i])...)
		}
		var err error
		if len(chunk) == per && full == nil && len(rows) > per {
			if full, err = conn.PrepareContext(ctx, q); err != nil {
				return fmt.Errorf("insert matches: %w", err)
			}
			defer full.Close()
		}
		if err = insertValues(ctx, conn, stmtFor(full, len(chunk) == per), q, args, chunk, consecutive); err != nil {
			return fmt.Errorf("insert matches: %w", err)
		}
	}
	return nil
}

// stmtFor is the prepared statement when the chunk has its full size, else nil (run q directly).
func stmtFor(full *sql.Stmt, isFull bool) *sql.Stmt {
	if isFull {
		return full
	}
	return nil
}

func insertSQL(n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO matches (" + matchColumns + ") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?,?,?,?,?)")
	}
	return b.String()
}

// insertJSON runs sqliteInsertFresh (c.param not "") or sqliteInsert on a chunk and sets the ids
// of its rows. Holding the write lock since its first write, the transaction gets consecutive
// rowids for the rows one statement inserts, in the order of the JSON array (jsonb_each's order:
// c.order), ending at last_insert_rowid: when the statement inserted every row they are numbered
// so; when OR IGNORE skipped some (and the AUTOINCREMENT counter may have left gaps), the ids are
// read back.
func insertJSON(ctx context.Context, conn gorm.ConnPool, chunk []store.Match, c freshChunk) error {
	var res sql.Result
	var err error
	if c.param != "" {
		a := &chunk[0]
		res, err = conn.ExecContext(ctx, sqliteInsertFresh, c.param, a.State, a.AsOf.Format(sqliteTime), a.Notified,
			a.MatchedAt.Format(sqliteTime), a.UpdatedAt.Format(sqliteTime))
		if err != nil {
			return err
		}
	} else {
		c.order = nil
		param, err := sqliteRows(chunk)
		if err != nil {
			return err
		}
		if res, err = conn.ExecContext(ctx, sqliteInsert, param); err != nil {
			return err
		}
	}
	last, err := res.LastInsertId()
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == int64(len(chunk)) {
		numberRows(chunk, last-n+1, c.order)
		return nil
	}
	return readIDs(ctx, conn, last-n+1, n, chunk)
}

// numberRows sets the ids of rows inserted by one statement in their order (order; nil: chunk
// order), from first on.
func numberRows(chunk []store.Match, first int64, order []int) {
	for k := range chunk {
		i := k
		if order != nil {
			i = order[k]
		}
		chunk[i].ID = uint64(first) + uint64(k)
	}
}

// consecutiveIDs reports whether InnoDB gives the rows of one multi-row INSERT consecutive ids on
// this connection: in the "traditional" and "consecutive" auto-increment lock modes (0 and 1,
// MariaDB's default) a simple INSERT reserves its ids as one block, with auto_increment_increment
// 1 the block has no gaps. In "interleaved" mode (2, MySQL 8's default) ids of concurrent
// statements can interleave, and a server without these variables is not trusted either.
func consecutiveIDs(ctx context.Context, conn gorm.ConnPool) bool {
	var mode, step sql.NullInt64
	err := conn.QueryRowContext(ctx, "SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment").Scan(&mode, &step)
	return err == nil && mode.Valid && mode.Int64 <= 1 && step.Valid && step.Int64 == 1
}

// insertValues runs a MySQL multi-row INSERT of a chunk and sets the ids of its rows, the first
// of which LastInsertId reports: numbered from it when the ids are consecutive (consecutiveIDs)
// and the statement inserted every row (it has no IGNORE: a duplicate fails it), else read back.
func insertValues(ctx context.Context, conn gorm.ConnPool, st *sql.Stmt, q string, args []any, chunk []store.Match, consecutive bool) error {
	var res sql.Result
	var err error
	if st != nil {
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = conn.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return err
	}
	first, err := res.LastInsertId()
	if err != nil {
		return err
	}
	if consecutive {
		if n, err := res.RowsAffected(); err == nil && n == int64(len(chunk)) && first > 0 {
			numberRows(chunk, first, nil)
			return nil
		}
	}
	return readIDs(ctx, conn, first, int64(len(chunk)), chunk)
}

// readIDs sets the ids of a chunk's rows from the n rows stored from id first on, checking that
// they are the chunk's; a row not among them (skipped because another writer stored it, or ids
// not consecutive after all) is looked up by its unique key.
func readIDs(ctx context.Context, conn gorm.ConnPool, first, n int64, chunk []store.Match) error {
	got := map[matchKey]uint64{}
	if n > 0 {
		var err error
		if got, err = scanIDs(ctx, conn, "SELECT id, policy_id, policy_version, credit_code FROM matches WHERE id >= ? AND id < ?",
			first, first+n); err != nil {
			return err
		}
	}
	var missing []int
	for i := range chunk {
		id, ok := got[matchKey{chunk[i].PolicyID, chunk[i].PolicyVersion, chunk[i].CreditCode}]
		if !ok {
			missing = append(missing, i)
		}
		chunk[i].ID = id
	}
	if len(missing) == 0 {
		return nil
	}
	rest := make([]store.Match, len(missing))
	for k, i := range missing {
		rest[k] = chunk[i]
	}
	if err := lookupIDs(ctx, conn, rest); err != nil {
		return err
	}
	for k, i := range missing {
		chunk[i].ID = rest[k].ID
	}
	return nil
}

// lookupIDs sets the ids of inserted rows by their unique key, one policy version at a time.
func lookupIDs(ctx context.Context, conn gorm.ConnPool, chunk []store.Match) error {
	type pv struct {
		policy  string
		version int
	}
	codes := map[pv][]any{}
	for _, m := range chunk {
		k := pv{m.PolicyID, m.PolicyVersion}
		codes[k] = append(codes[k], m.CreditCode)
	}
	got := map[matchKey]uint64{}
	for k, cs := range codes {
		q := "SELECT id, policy_id, policy_version, credit_code FROM matches WHERE policy_id = ? AND policy_version = ? AND credit_code IN (?" +
			strings.Repeat(",?", len(cs)-1) + ")"
		part, err := scanIDs(ctx, conn, q, append([]any{k.policy, k.version}, cs...)...)
		if err != nil {
			return err
		}
		for mk, id := range part {
			got[mk] = id
		}
	}
	for i := range chunk {
		id, ok := got[matchKey{chunk[i].PolicyID, chunk[i].PolicyVersion, chunk[i].CreditCode}]
		if !ok {
			return fmt.Errorf("match %s/%d/%s was inserted but cannot be read back", chunk[i].PolicyID, chunk[i].PolicyVersion, chunk[i].CreditCode)
		}
		chunk[i].ID = id
	}
	return nil
}

func scanIDs(ctx context.Context, conn gorm.ConnPool, q string, args ...any) (map[matchKey]uint64, error) {
	rows, err := conn.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[matchKey]uint64{}
	for rows.Next() {
		var id uint64
		var k matchKey
		if err := rows.Scan(&id, &k.policy, &k.version, &k.code); err != nil {
			return nil, err
		}
		out[k] = id
	}
	return out, rows.Err()
}
