package matcher

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"math/bits"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// The snapshot is the matcher's in-memory copy of the registry: one row per active firm, one
// column per field that the active rules read, stored the way rules see it (policies.EnvOf is applied
// on the way in, so text clamping and time zones are exactly those of the plain path).
//
//   - credit codes: 18 bytes per firm in one byte slice, rows in credit-code order as loaded (a
//     binary search finds a firm; firms added later are found through a small map);
//   - whole numbers and amounts: []int64 and []float64;
//   - booleans: one bit per firm;
//   - text and dates: dictionary-encoded, a uint16 code per firm and the distinct values once; a NULL
//     date has its own code (the dictionary's null mask). A column whose distinct values outgrow
//     the code space (names, phone numbers) keeps plain values instead;
//   - zone maps: for each block of blockRows firms and each small dictionary, which codes occur, so
//     a policy scoped to a region skips blocks without that region;
//   - extra fields (config fields.extra): parsed values of the firms that have any.

const (
	codeLen      = 18            // bytes of a credit code
	maxDictCodes = 1 << 16       // codes a dictionary column can hold
	maxZoneCodes = 4096          // dictionaries larger than this get no zone maps
	pageSize     = 10000         // firms read per keyset page
	extraKey     = "extra"       // rules.Env field holding extra fields
	asOfKey      = "as_of"       // rules.Env field holding the evaluation date
	creditKey    = "credit_code" // rules.Env field of the key
	statusKey    = "status"      // rules.Env field of the registration status
	timeNullCode = uint16(0)     // dictionary code of a NULL date
	wordBits     = 64            // rows per bitset word
	blockWords   = 64            // words per block
	blockRows    = wordBits * blockWords
)

// valueKind is how a column stores its field.
type valueKind uint8

const (
	kindInt valueKind = iota + 1
	kindFloat
	kindBool
	kindString
	kindTime
)

// fieldSpec binds a rules.Env field to its storage.
type fieldSpec struct {
	key   string // catalog key: expr tag of rules.Env and column of the enterprises table
	index int    // field index in rules.Env
	kind  valueKind
}

var timeType = reflect.TypeOf(time.Time{})

// envSpecs lists the rules.Env fields a column can hold, by catalog key. credit_code, as_of and
// extra are held elsewhere; a field of another Go type cannot be matched by the engine (loading
// fails and names it, so a new field type never gives silently different answers).
var envSpecs = sync.OnceValues(func() (map[string]fieldSpec, error) {
	out := map[string]fieldSpec{}
	t := reflect.TypeOf(rules.Env{})
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := f.Tag.Get("expr")
		if key == "" || key == creditKey || key == asOfKey || key == extraKey {
			continue
		}
		s := fieldSpec{key: key, index: i}
		switch {
		case f.Type == timeType:
			s.kind = kindTime
		case f.Type.Kind() == reflect.Int64:
			s.kind = kindInt
		case f.Type.Kind() == reflect.Float64:
			s.kind = kindFloat
		case f.Type.Kind() == reflect.Bool:
			s.kind = kindBool
		case f.Type.Kind() == reflect.String:
			s.kind = kindString
		default:
			return nil, fmt.Errorf("rules.Env field %s has type %s, which the matcher's snapshot cannot hold", key, f.Type)
		}
		out[key] = s
	}
	return out, nil
})

// envIndex is the rules.Env field index of a key (credit_code, as_of, extra included).
var envIndex = sync.OnceValue(func() map[string]int {
	out := map[string]int{}
	t := reflect.TypeOf(rules.Env{})
	for i := 0; i < t.NumField(); i++ {
		if key := t.Field(i).Tag.Get("expr"); key != "" {
			out[key] = i
		}
	}
	return out
})

// timeKey identifies a time value exactly: its instant and whether it is the zero time.Time of a
// NULL date (policies.EnvOf leaves that one without a location).
type timeKey struct {
	sec  int64
	nsec int32
	null bool
}

func keyOfTime(t time.Time) timeKey {
	return timeKey{sec: t.Unix(), nsec: int32(t.Nanosecond()), null: t == time.Time{}}
}

// dictionary holds the distinct values of a text or date column; a row stores the value's code.
// Code 0 is the field's zero value ("" or the NULL date), so a new row starts out valid.
type dictionary struct {
	values []any // string or time.Time, by code
	strs   map[string]uint16
	times  map[timeKey]uint16
}

func newDictionary(kind valueKind) *dictionary {
	d := &dictionary{}
	if kind == kindTime {
		d.times = map[timeKey]uint16{keyOfTime(time.Time{}): timeNullCode}
		d.values = []any{time.Time{}}
	} else {
		d.strs = map[string]uint16{"": 0}
		d.values = []any{""}
	}
	return d
}

// code returns the code of v, adding it; ok is false when the dictionary is full.
func (d *dictionary) code(v reflect.Value) (uint16, bool) {
	if d.times != nil {
		t := v.Interface().(time.Time)
		return intern(d, d.times, keyOfTime(t), t)
	}
	s := v.String()
	return intern(d, d.strs, s, s)
}

// intern returns the code of key k in codes, giving value v the next code when k is new; ok is
// false when the dictionary is full. v is boxed only when it is added.
func intern[K comparable, V string | time.Time](d *dictionary, codes map[K]uint16, k K, v V) (uint16, bool) {
	if c, ok := codes[k]; ok {
		return c, true
	}
	if len(d.values) >= maxDictCodes {
		return 0, false
	}
	c := uint16(len(d.values))
	codes[k] = c
	d.values = append(d.values, v)
	return c, true
}

// column is one field of every row.
type column struct {
	spec   fieldSpec
	ints   []int64
	floats []float64
	bools  []uint64 // bitset by row
	codes  []uint16 // dictionary code by row
	dict   *dictionary
	plain  []any      // values by row, once the dictionary overflowed
	zones  [][]uint64 // per block: set of codes present (small dictionaries only)
}

// dictionary reports whether rows hold dictionary codes.
func (c *column) dictionary() bool { return c.dict != nil }

// boolean reports whether rows hold bits.
func (c *column) boolean() bool { return c.spec.kind == kindBool }

// cardinality is the number of distinct codes of a dictionary or boolean column.
func (c *column) cardinality() int {
	if c.boolean() {
		return 2
	}
	return len(c.dict.values)
}

// codeValue is the value rules see for a code of a dictionary or boolean column.
func (c *column) codeValue(code int) any {
	if c.boolean() {
		return code == 1
	}
	return c.dict.values[code]
}

// set stores the value of row (which exists).
func (c *column) set(row int, v reflect.Value) {
	switch c.spec.kind {
	case kindInt:
		c.ints[row] = v.Int()
	case kindFloat:
		c.floats[row] = v.Float()
	case kindBool:
		if v.Bool() {
			c.bools[row/wordBits] |= 1 << (row % wordBits)
		} else {
			c.bools[row/wordBits] &^= 1 << (row % wordBits)
		}
	default:
		if c.dict == nil {
			c.plain[row] = v.Interface()
			return
		}
		code, ok := c.dict.code(v)
		if !ok {
			c.toPlain()
			c.plain[row] = v.Interface()
			return
		}
		c.codes[row] = code
		c.markZone(row, code)
	}
}

// markZone records that code occurs in row's block.
func (c *column) markZone(row int, code uint16) {
	if c.zones == nil {
		return
	}
	if int(code) >= maxZoneCodes {
		c.zones = nil
		return
	}
	blk := row / blockRows
	for len(c.zones) <= blk {
		c.zones = append(c.zones, nil)
	}
	z := c.zones[blk]
	for len(z) <= int(code)/wordBits {
		z = append(z, 0)
	}
	z[code/wordBits] |= 1 << (code % wordBits)
	c.zones[blk] = z
}

// toPlain turns a dictionary column whose dictionary is full into plain values.
func (c *column) toPlain() {
	c.plain = make([]any, len(c.codes), cap(c.codes))
	for i, code := range c.codes {
		c.plain[i] = c.dict.values[code]
	}
	c.codes, c.dict, c.zones = nil, nil, nil
}

// grow adds one row with the zero value.
func (c *column) grow() {
	switch c.spec.kind {
	case kindInt:
		c.ints = append(c.ints, 0)
	case kindFloat:
		c.floats = append(c.floats, 0)
	case kindBool:
		// bitsets grow with the snapshot's row count
	default:
		if c.dict == nil {
			c.plain = append(c.plain, reflect.Zero(reflect.TypeOf(rules.Env{}).Field(c.spec.index).Type).Interface())
		} else {
			c.codes = append(c.codes, 0)
		}
	}
}

// get writes row's value into the Env field v.
func (c *column) get(row int, v reflect.Value) {
	switch c.spec.kind {
	case kindInt:
		v.SetInt(c.ints[row])
	case kindFloat:
		v.SetFloat(c.floats[row])
	case kindBool:
		v.SetBool(c.bools[row/wordBits]&(1<<(row%wordBits)) != 0)
	default:
		v.Set(reflect.ValueOf(c.held(row)))
	}
}

// held is row's value of a dictionary or plain column.
func (c *column) held(row int) any {
	if c.dict != nil {
		return c.dict.values[c.codes[row]]
	}
	return c.plain[row]
}

// str is row's value of a string column (false for another kind).
func (c *column) str(row int) (string, bool) {
	if c.spec.kind != kindString {
		return "", false
	}
	v, ok := c.held(row).(string)
	return v, ok
}

// bytes is the memory the column holds.
func (c *column) bytes() int {
	n := 8*cap(c.ints) + 8*cap(c.floats) + 8*cap(c.bools) + 2*cap(c.codes)
	for _, v := range c.plain {
		n += 16
		if s, ok := v.(string); ok {
			n += len(s)
		} else {
			n += 24
		}
	}
	if c.dict != nil {
		for _, v := range c.dict.values {
			n += 16 + 24 // interface and map entry
			if s, ok := v.(string); ok {
				n += len(s)
			}
		}
	}
	for _, z := range c.zones {
		n += 24 + 8*cap(z)
	}
	return n
}

// Snapshot is a column-oriented copy of the active firms of the registry (or of one shard of the
// credit-code space). It is not safe for concurrent mutation; the Engine serialises changes.
type Snapshot struct {
	n      int
	codes  []byte           // credit codes, codeLen bytes per row (shorter codes padded with 0)
	sorted int              // rows [0, sorted) are in ascending credit-code order
	late   map[string]int32 // rows added out of order, by credit code
	active []uint64         // rows whose status is active: the population rules are evaluated on
	cols   map[string]*column
	facts  map[int32]map[string]any // extra fields, of the rows that have any
	extras []string                 // extra field keys held
	voc    *rules.Vocabulary        // the types of the extra fields
	lo, hi string                   // credit-code range held ([lo, hi); empty: open)
}

func newSnapshot(lo, hi string) *Snapshot {
	return &Snapshot{cols: map[string]*column{}, late: map[string]int32{}, facts: map[int32]map[string]any{}, lo: lo, hi: hi}
}

// Len is the number of rows (firms held, active or not).
func (s *Snapshot) Len() int { return s.n }

// Active is the number of active firms.
func (s *Snapshot) Active() int {
	n := 0
	for _, w := range s.active {
		n += bits.OnesCount64(w)
	}
	return n
}

// Bytes is the memory the snapshot holds: columns, dictionaries, zone maps, codes and bitsets.
func (s *Snapshot) Bytes() int {
	n := cap(s.codes) + 8*cap(s.active) + len(s.late)*(codeLen+16+4+8)
	for _, c := range s.cols {
		n += c.bytes()
	}
	for _, f := range s.facts {
		n += 48 + 32*len(f)
	}
	return n
}

// Fields lists the catalog keys held as columns.
func (s *Snapshot) Fields() []string {
	out := make([]string, 0, len(s.cols))
	for k := range s.cols {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// code returns the credit code of row.
func (s *Snapshot) code(row int) string {
	c := s.codes[row*codeLen : (row+1)*codeLen]
	return string(bytes.TrimRight(c, "\x00"))
}

func padCode(code string) []byte {
	b := make([]byte, codeLen)
	copy(b, code)
	return b
}

// row finds a firm by credit code.
func (s *Snapshot) row(code string) (int, bool) {
	if len(code) > codeLen {
		return 0, false
	}
	key := padCode(code)
	i := sort.Search(s.sorted, func(i int) bool { return bytes.Compare(s.codes[i*codeLen:(i+1)*codeLen], key) >= 0 })
	if i < s.sorted && bytes.Equal(s.codes[i*codeLen:(i+1)*codeLen], key) {
		return i, true
	}
	r, ok := s.late[code]
	return int(r), ok
}

// isActive reports whether row is in the evaluated population.
func (s *Snapshot) isActive(row int) bool { return s.active[row/wordBits]&(1<<(row%wordBits)) != 0 }

func (s *Snapshot) setActive(row int, on bool) {
	if on {
		s.active[row/wordBits] |= 1 << (row % wordBits)
	} else {
		s.active[row/wordBits] &^= 1 << (row % wordBits)
	}
}

// inRange reports whether a credit code belongs to the snapshot's range.
func (s *Snapshot) inRange(code string) bool {
	return code >= s.lo && (s.hi == "" || code < s.hi)
}

// addColumn adds an empty column for spec, sized to the current rows.
func (s *Snapshot) addColumn(spec fieldSpec) *column {
	c := &column{spec: spec}
	switch spec.kind {
	case kindInt:
		c.ints = make([]int64, s.n)
	case kindFloat:
		c.floats = make([]float64, s.n)
	case kindBool:
		c.bools = make([]uint64, len(s.active))
	default:
		c.dict = newDictionary(spec.kind)
		c.codes = make([]uint16, s.n)
		c.zones = [][]uint64{}
		for row := 0; row < s.n; row++ {
			c.markZone(row, 0)
		}
	}
	s.cols[spec.key] = c
	return c
}

// appendRow adds a row for code and returns its index.
func (s *Snapshot) appendRow(code string) int {
	row := s.n
	s.n++
	s.codes = append(s.codes, padCode(code)...)
	if row/wordBits >= len(s.active) {
		s.active = append(s.active, 0)
		for _, c := range s.cols {
			if c.boolean() {
				c.bools = append(c.bools, 0)
			}
		}
	}
	for _, c := range s.cols {
		c.grow()
	}
	if row == s.sorted && (row == 0 || bytes.Compare(s.codes[(row-1)*codeLen:row*codeLen], s.codes[row*codeLen:]) < 0) {
		s.sorted++
	} else {
		s.late[code] = int32(row)
	}
	return row
}

// rowImage is the stored state of one row, to undo a change whose transaction failed.
type rowImage struct {
	row    int
	added  bool
	active bool
	env    rules.Env
}

// image captures row for undo.
func (s *Snapshot) image(row int) rowImage {
	img := rowImage{row: row, active: s.isActive(row)}
	s.fill(row, &img.env)
	return img
}

// restore puts back a captured row. An added row stays (inactive): rows are never removed.
func (s *Snapshot) restore(img rowImage) {
	if img.row < 0 {
		return
	}
	if img.added {
		s.setActive(img.row, false)
		return
	}
	s.store(img.row, &img.env, img.active)
}

// put stores a firm's values (as rules see them), adding a row when the firm is new. It returns the
// row and whether any held value, the status or the extra fields changed.
func (s *Snapshot) put(e *store.Enterprise, facts map[string]any) (img rowImage, changed bool) {
	row, ok := s.row(e.CreditCode)
	env := policies.EnvOf(e, time.Time{})
	env.Extra = facts
	active := e.Status == store.StatusActive
	if !ok {
		if !active { // never held: it qualifies for nothing, and any match it still has goes
			return rowImage{row: -1}, true
		}
		row = s.appendRow(e.CreditCode)
		img = rowImage{row: row, added: true}
		s.store(row, &env, active)
		return img, true
	}
	img = s.image(row)
	if img.active == active && s.sameEnv(&img.env, &env) {
		return img, false
	}
	s.store(row, &env, active)
	return img, true
}

// store writes env into row's columns.
func (s *Snapshot) store(row int, env *rules.Env, active bool) {
	v := reflect.ValueOf(env).Elem()
	for _, c := range s.cols {
		c.set(row, v.Field(c.spec.index))
	}
	s.setActive(row, active)
	s.setFacts(row, env.Extra)
}

func (s *Snapshot) setFacts(row int, facts map[string]any) {
	held := map[string]any{}
	for _, k := range s.extras {
		if v, ok := facts[k]; ok {
			held[k] = v
		}
	}
	if len(held) == 0 {
		delete(s.facts, int32(row))
	} else {
		s.facts[int32(row)] = held
	}
}

// sameEnv reports whether two environments agree in every column and extra field the snapshot holds.
func (s *Snapshot) sameEnv(cur, env *rules.Env) bool {
	v, w := reflect.ValueOf(env).Elem(), reflect.ValueOf(cur).Elem()
	for _, c := range s.cols {
		a, b := v.Field(c.spec.index), w.Field(c.spec.index)
		if c.spec.kind == kindTime {
			if keyOfTime(a.Interface().(time.Time)) != keyOfTime(b.Interface().(time.Time)) {
				return false
			}
			continue
		}
		if !a.Equal(b) {
			return false
		}
	}
	for _, k := range s.extras {
		a, aok := env.Extra[k]
		b, bok := cur.Extra[k]
		if aok != bok || (aok && !reflect.DeepEqual(a, b)) {
			return false
		}
	}
	return true
}

// fill writes row's values into env (credit code, every column, extra fields); as_of is the
// caller's. Fields not held stay as they are: no rule that is evaluated reads them.
func (s *Snapshot) fill(row int, env *rules.Env) {
	v := reflect.ValueOf(env).Elem()
	env.CreditCode = s.code(row)
	for _, c := range s.cols {
		c.get(row, v.Field(c.spec.index))
	}
	env.Extra = nil
	if f, ok := s.facts[int32(row)]; ok {
		env.Extra = make(map[string]any, len(f))
		for k, x := range f {
			env.Extra[k] = x
		}
	}
}

// NewSnapshot builds a snapshot from firms in memory (tests, benchmarks, one firm's re-match);
// fields are the catalog keys to hold (nil: every field). Inactive firms are left out. Firms need
// not be sorted.
func NewSnapshot(firms []store.Enterprise, fields []string) (*Snapshot, error) {
	s := newSnapshot("", "")
	if err := s.ensureColumns(fields); err != nil {
		return nil, err
	}
	sorted := slices.Clone(firms)
	slices.SortStableFunc(sorted, func(a, b store.Enterprise) int { return strings.Compare(a.CreditCode, b.CreditCode) })
	for i := range sorted {
		if len(sorted[i].CreditCode) > codeLen || sorted[i].Status != store.StatusActive {
			continue
		}
		if _, dup := s.row(sorted[i].CreditCode); dup {
			continue
		}
		s.put(&sorted[i], nil)
	}
	return s, nil
}

// ensureColumns adds (empty) columns for the fields that are not held yet and returns an error for
// a key that is neither a catalog field nor an extra field.
func (s *Snapshot) ensureColumns(fields []string) error {
	specs, err := envSpecs()
	if err != nil {
		return err
	}
	if fields == nil {
		for k := range specs {
			fields = append(fields, k)
		}
		sort.Strings(fields)
	}
	for _, k := range fields {
		if _, ok := s.cols[k]; ok || k == creditKey || k == asOfKey {
			continue
		}
		spec, ok := specs[k]
		if !ok {
			return fmt.Errorf("field %s is not a registry field the matcher can hold", k)
		}
		s.addColumn(spec)
	}
	return nil
}

// LoadOptions say what to load.
type LoadOptions struct {
	Fields   []string  // catalog keys to hold (nil: all); credit_code and status always
	Extras   []string  // extra field keys to hold
	Lo, Hi   string    // credit-code range [Lo, Hi); empty: open
	Progress io.Writer // progress bar; nil: none
	// Vocabulary declares the extra fields' types (nil: the standard one, which has none).
	Vocabulary *rules.Vocabulary
}

// LoadSnapshot reads the active firms (of a credit-code range) by keyset pagination on the credit
// code. One goroutine reads pages while the caller's goroutine stores them.
func LoadSnapshot(ctx context.Context, db *gorm.DB, o LoadOptions) (*Snapshot, error) {
	s := newSnapshot(o.Lo, o.Hi)
	if err := s.ensureColumns(o.Fields); err != nil {
		return nil, err
	}
	s.extras = slices.Clone(o.Extras)
	s.voc = o.Vocabulary
	q := db.WithContext(ctx).Model(&store.Enterprise{}).Where("status = ?", store.StatusActive)
	q = rangeWhere(q, o.Lo, o.Hi)
	var total int64
	if err := q.Count(&total).Error; err != nil {
		return nil, fmt.Errorf("count firms: %w", err)
	}
	s.codes = make([]byte, 0, int(total)*codeLen)
	s.active = make([]uint64, 0, int(total)/wordBits+1)
	for _, c := range s.cols {
		switch c.spec.kind {
		case kindInt:
			c.ints = make([]int64, 0, total)
		case kindFloat:
			c.floats = make([]float64, 0, total)
		case kindBool:
			c.bools = make([]uint64, 0, int(total)/wordBits+1)
		default:
			c.codes = make([]uint16, 0, total)
		}
	}
	bar := newBar(o.Progress, total, "载入企业快照")
	err := readFirms(ctx, db, s.selectColumns(), o.Lo, o.Hi, func(batch []store.Enterprise) error {
		for i := range batch {
			code := batch[i].CreditCode
			if len(code) > codeLen {
				continue
			}
			if s.n > 0 && bytes.Compare(padCode(code), s.codes[(s.n-1)*codeLen:]) <= 0 {
				// The database orders codes differently from bytes (a collation): keep the row, once.
				if _, dup := s.row(code); dup {
					continue
				}
			}
			row := s.appendRow(code)
			env := policies.EnvOf(&batch[i], time.Time{})
			s.store(row, &env, true)
		}
		if bar != nil {
			_ = bar.Add(len(batch))
		}
		return nil
	})
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil {
		return nil, err
	}
	if err := s.loadFacts(ctx, db, s.extras); err != nil {
		return nil, err
	}
	return s, nil
}

// addFields loads, for every held firm, fields and extra fields that are not held yet (a policy
// published after loading reads them).
func (s *Snapshot) addFields(ctx context.Context, db *gorm.DB, fields, extras []string) error {
	var missing []string
	for _, k := range fields {
		if _, ok := s.cols[k]; !ok && k != creditKey && k != asOfKey {
			missing = append(missing, k)
		}
	}
	// ensureColumns(nil) would add every column, empty: a policy reading one of them would then
	// see zeros instead of the firms' data.
	if len(missing) > 0 {
		if err := s.ensureColumns(missing); err != nil {
			return err
		}
		cols := append([]string{creditKey, statusKey}, missing...)
		err := readFirms(ctx, db, cols, s.lo, s.hi, func(batch []store.Enterprise) error {
			for i := range batch {
				row, ok := s.row(batch[i].CreditCode)
				if !ok {
					continue
				}
				env := policies.EnvOf(&batch[i], time.Time{})
				v := reflect.ValueOf(&env).Elem()
				for _, k := range missing {
					c := s.cols[k]
					c.set(row, v.Field(c.spec.index))
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	var newExtras []string
	for _, k := range extras {
		if !slices.Contains(s.extras, k) {
			newExtras = append(newExtras, k)
		}
	}
	s.extras = append(s.extras, newExtras...)
	return s.loadFacts(ctx, db, newExtras)
}

// The columns of a firm's place: the match counts are kept per region code and park.
const (
	regionKey = "region_code"
	parkKey   = "park_id"
)

// placesMargin is how long before its load began a snapshot's places are trusted from: a firm
// updated from then on is read again when new matches are counted (store.KnownPlaces.Since).
const placesMargin = time.Minute

// withPlaces adds the place columns to the fields a snapshot loads.
func withPlaces(fields []string) []string {
	out := slices.Clone(fields)
	for _, k := range []string{regionKey, parkKey} {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// places are the firms' region codes and parks as the snapshot holds them, to be trusted for firms
// not updated from since on, or for all while the registry's move count is still moves (read
// before the load began); nil when it does not hold both columns.
func (s *Snapshot) places(since time.Time, moves int64) *store.KnownPlaces {
	region, park := s.cols[regionKey], s.cols[parkKey]
	if region == nil || park == nil {
		return nil
	}
	return &store.KnownPlaces{Since: since, Moves: moves, Counted: true, Place: func(code string) (string, string, bool) {
		row, ok := s.row(code)
		if !ok {
			return "", "", false
		}
		r, rok := region.str(row)
		p, pok := park.str(row)
		return r, p, rok && pok
	}}
}

// selectColumns are the enterprises columns the snapshot reads.
func (s *Snapshot) selectColumns() []string {
	out := []string{creditKey, statusKey}
	for _, k := range s.Fields() {
		if k != statusKey {
			out = append(out, k)
		}
	}
	return out
}

func rangeWhere(q *gorm.DB, lo, hi string) *gorm.DB {
	if lo != "" {
		q = q.Where("credit_code >= ?", lo)
	}
	if hi != "" {
		q = q.Where("credit_code < ?", hi)
	}
	return q
}

// enterpriseColumns maps a column of the enterprises table to its store.Enterprise field.
var enterpriseColumns = sync.OnceValue(func() map[string]int {
	out := map[string]int{}
	t := reflect.TypeOf(store.Enterprise{})
	for i := 0; i < t.NumField(); i++ {
		for _, part := range strings.Split(t.Field(i).Tag.Get("gorm"), ";") {
			if name, ok := strings.CutPrefix(part, "column:"); ok {
				out[name] = i
			}
		}
	}
	return out
})

// readFirms reads active firms of a range in credit-code order, page by page, selecting only cols,
// and hands each page to each in that order.
//
// Several connections read at once (loadReaders), each a page of its own, while each stores the
// pages read before: one goroutine finds where each page ends — the credit code pageSize firms
// (of any status) further on, from the key alone — and the readers read the pages between those
// codes. The pages tile the range whatever a concurrent writer does meanwhile: each starts after
// the code the one before it ended on. One reader was the whole of the load's time (190,000
// firms on SQLite: 1.6 s, the decoding of rows in the driver as much as SQLite's reading),
// with the machine's other core idle.
func readFirms(ctx context.Context, db *gorm.DB, cols []string, lo, hi string, each func([]store.Enterprise) error) error {
	fields := enterpriseColumns()
	for _, c := range cols {
		if _, ok := fields[c]; !ok {
			return fmt.Errorf("enterprises has no column %s", c)
		}
	}
	table, active := store.ActiveByCode(db)
	// A page holds the codes after `after` (from it, for the range's first page) up to and
	// including `last` (up to hi, excluded, for the range's last page).
	type page struct {
		after, last string
		first, end  bool
		firms       []store.Enterprise
		err         error
		done        chan struct{}
	}
	conns, err := loadConns(ctx, db, loadReaders()+1)
	if err != nil {
		return err
	}
	defer conns.release()
	readers := len(conns.db) - 1
	read := func(db *gorm.DB, p *page) {
		defer close(p.done)
		q := "SELECT " + strings.Join(cols, ", ") + " FROM " + table + " WHERE " + active
		args := []any{store.StatusActive}
		if p.first {
			if p.after != "" {
				q, args = q+" AND credit_code >= ?", append(args, p.after)
			}
		} else {
			q, args = q+" AND credit_code > ?", append(args, p.after)
		}
		if !p.end {
			q, args = q+" AND credit_code <= ?", append(args, p.last)
		} else if hi != "" {
			q, args = q+" AND credit_code < ?", append(args, hi)
		}
		p.firms, p.err = scanPage(ctx, db, q+" ORDER BY credit_code", args, cols, fields)
	}
	ctx, cancel := context.WithCancel(ctx)
	jobs := make(chan *page)
	order := make(chan *page, readers)
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range jobs {
				read(conns.db[i+1], p)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(jobs)
		defer close(order)
		after, first := lo, true
		for {
			p := &page{after: after, first: first, done: make(chan struct{})}
			last, found, err := pageEnd(ctx, conns.db[0], after, first, hi)
			if err != nil {
				p.err = err
				close(p.done)
			} else {
				p.last, p.end = last, !found
			}
			select {
			case order <- p:
			case <-ctx.Done():
				return
			}
			if p.err != nil {
				return
			}
			select {
			case jobs <- p:
			case <-ctx.Done():
				return
			}
			if p.end {
				return
			}
			after, first = last, false
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	for p := range order {
		select {
		case <-p.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if p.err != nil {
			return p.err
		}
		if err := each(p.firms); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// readConns are connections of their own for a load's readers.
type readConns struct {
	db    []*gorm.DB
	conns []*sql.Conn
	close bool
}

// loadConns takes n connections from db's pool for a load, fewer when the pool is small: at
// most half of it, so that the process's other users (serve's relay, notifiers and console) keep
// the rest; with fewer than two every query takes its turn on the pool (each db is db itself).
// On SQLite they are closed when the load ends rather than handed back: each one's page cache
// is then full of the registry's pages, and the full match's writer, taking a connection from
// the pool next, spent its commits dropping them (pcache1TruncateUnsafe: 0.7-0.9 s of a write
// phase of 200,000 firms, against 0.3 s on a connection of its own).
func loadConns(ctx context.Context, db *gorm.DB, n int) (*readConns, error) {
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	if max := sqlDB.Stats().MaxOpenConnections; max > 0 {
		n = min(n, max/2)
	}
	rc := &readConns{close: db.Dialector.Name() == "sqlite"}
	if n < 2 {
		rc.db = []*gorm.DB{db, db}
		return rc, nil
	}
	for range n {
		c, err := sqlDB.Conn(ctx)
		if err != nil {
			rc.release()
			return nil, fmt.Errorf("read firms: %w", err)
		}
		s := db.Session(&gorm.Session{NewDB: true, Context: ctx})
		s.Statement.ConnPool = c
		rc.conns, rc.db = append(rc.conns, c), append(rc.db, s)
	}
	return rc, nil
}

// release hands the connections back to the pool, or closes them (SQLite: see loadConns).
func (rc *readConns) release() {
	for _, c := range rc.conns {
		if rc.close {
			// driver.ErrBadConn from Raw makes database/sql close the connection
			_ = c.Raw(func(any) error { return driver.ErrBadConn })
		}
		_ = c.Close()
	}
}

// loadPage is how many firms (of any status) a page of readFirms spans: pageSize (a variable for
// tests).
var loadPage = pageSize

// loadReaders is how many connections readFirms reads pages on at once.
func loadReaders() int { return max(2, min(runtime.GOMAXPROCS(0), 4)) }

// pageEnd is the code on which the page starting after (from, when first) ends: pageSize codes
// further on (loadPage), not beyond hi; found is false when fewer remain (the page runs to hi).
func pageEnd(ctx context.Context, db *gorm.DB, after string, first bool, hi string) (string, bool, error) {
	q := "SELECT credit_code FROM enterprises"
	var args []any
	var where []string
	switch {
	case first && after != "":
		where, args = append(where, "credit_code >= ?"), append(args, after)
	case !first:
		where, args = append(where, "credit_code > ?"), append(args, after)
	}
	if hi != "" {
		where, args = append(where, "credit_code < ?"), append(args, hi)
	}
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	var codes []string
	err := db.WithContext(ctx).Raw(q+" ORDER BY credit_code LIMIT 1 OFFSET ?", append(args, loadPage-1)...).Scan(&codes).Error
	if err != nil {
		return "", false, fmt.Errorf("read firms: find the end of a page: %w", err)
	}
	if len(codes) == 0 {
		return "", false, nil
	}
	return codes[0], true, nil
}

func scanPage(ctx context.Context, db *gorm.DB, query string, args []any, cols []string, fields map[string]int) ([]store.Enterprise, error) {
	rows, err := db.WithContext(ctx).Raw(query, args...).Rows()
	if err != nil {
		return nil, fmt.Errorf("read firms: %w", err)
	}
	defer rows.Close()
	out := make([]store.Enterprise, 0, pageSize)
	var date sql.NullTime
	dest := make([]any, len(cols))
	for rows.Next() {
		out = append(out, store.Enterprise{})
		e := reflect.ValueOf(&out[len(out)-1]).Elem()
		for i, c := range cols {
			if c == "registered_at" {
				dest[i] = &date
				continue
			}
			dest[i] = e.Field(fields[c]).Addr().Interface()
		}
		date = sql.NullTime{}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("read firms: %w", err)
		}
		if date.Valid {
			t := date.Time
			out[len(out)-1].RegisteredAt = &t
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read firms: %w", err)
	}
	return out, nil
}

// parseFacts adds stored extra field values to by (credit code → key → value) as the plain path
// parses them: a value that no longer parses (the field's type changed in config) reads as missing.
func parseFacts(voc *rules.Vocabulary, rows []store.EnterpriseFact, by map[string]map[string]any) {
	fields := map[string]registry.Field{}
	for _, f := range voc.Extra() {
		fields[f.Key] = f
	}
	for _, f := range rows {
		spec, ok := fields[f.Field]
		if !ok {
			continue
		}
		if v, err := rules.ParseFact(spec, f.Value); err == nil {
			if by[f.CreditCode] == nil {
				by[f.CreditCode] = map[string]any{}
			}
			by[f.CreditCode][f.Field] = v
		}
	}
}

// loadFacts reads the extra fields keys of the held firms from enterprise_facts.
func (s *Snapshot) loadFacts(ctx context.Context, db *gorm.DB, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	after := store.EnterpriseFact{}
	for {
		var batch []store.EnterpriseFact
		q := db.WithContext(ctx).Where("field IN ? AND (credit_code > ? OR (credit_code = ? AND field > ?))",
			keys, after.CreditCode, after.CreditCode, after.Field)
		if err := q.Order("credit_code, field").Limit(pageSize).Find(&batch).Error; err != nil {
			return fmt.Errorf("load extra fields: %w", err)
		}
		by := map[string]map[string]any{}
		parseFacts(s.voc, batch, by)
		for code, values := range by {
			row, ok := s.row(code)
			if !ok {
				continue
			}
			if s.facts[int32(row)] == nil {
				s.facts[int32(row)] = map[string]any{}
			}
			for k, v := range values {
				s.facts[int32(row)][k] = v
			}
		}
		if len(batch) < pageSize {
			return nil
		}
		after = batch[len(batch)-1]
	}
}

// factsOf reads the extra fields of some firms (a change event's firms).
func factsOf(ctx context.Context, db *gorm.DB, voc *rules.Vocabulary, keys, codes []string) (map[string]map[string]any, error) {
	out := map[string]map[string]any{}
	if len(keys) == 0 || len(codes) == 0 {
		return out, nil
	}
	var rows []store.EnterpriseFact
	if err := db.WithContext(ctx).Where("field IN ? AND credit_code IN ?", keys, codes).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("load extra fields: %w", err)
	}
	parseFacts(voc, rows, out)
	return out, nil
}

// factsChangedSince lists the firms (of a credit-code range) whose extra fields were stored since t.
// A value removed from enterprise_facts leaves no trace there; it is read at the firm's next change.
func factsChangedSince(ctx context.Context, db *gorm.DB, keys []string, t time.Time, lo, hi string) ([]string, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	var codes []string
	q := rangeWhere(db.WithContext(ctx).Model(&store.EnterpriseFact{}).Where("field IN ? AND updated_at >= ?", keys, t), lo, hi)
	if err := q.Distinct("credit_code").Pluck("credit_code", &codes).Error; err != nil {
		return nil, fmt.Errorf("read changed extra fields: %w", err)
	}
	return codes, nil
}
