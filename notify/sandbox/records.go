package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Record is one message a sandbox provider accepted, one JSON object per line in Dir/wechat.jsonl or
// Dir/sms.jsonl. To is the recipient as the provider saw it (openid or E.164/mainland number): the
// records are the provider's side of the story, which checks compare against the engine's.
type Record struct {
	Provider   string            `json:"provider"` // "wechat", "tencent", "aliyun"
	DeliveryID string            `json:"delivery_id"`
	To         string            `json:"to"`
	Template   string            `json:"template"`
	Params     map[string]string `json:"params,omitempty"` // WeChat data keys; Tencent "1".."n"; Aliyun TemplateParam
	ProviderID string            `json:"provider_id"`      // msgid, SerialNo or BizId
	// Shown is what WeChat displays of a template message since 2023-05-04: no first or remark,
	// each value on one line cut to 20 characters with an ellipsis. Truncated names the keys cut.
	Shown     map[string]string `json:"shown,omitempty"`
	Truncated []string          `json:"truncated,omitempty"`
	At        time.Time         `json:"at"`
}

// File names inside Options.Dir.
const (
	WeChatFile = "wechat.jsonl"
	SMSFile    = "sms.jsonl"
)

// ReadRecords parses a records file. A last line without its newline is a write cut short by a
// crash; it was never acknowledged to the client, so it is skipped rather than reported.
func ReadRecords(path string) ([]Record, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sandbox: read records: %w", err)
	}
	recs, _, err := parseRecords(data)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %s: %w", path, err)
	}
	return recs, nil
}

// parseRecords returns the records of every complete line and the length of that complete prefix.
func parseRecords(data []byte) ([]Record, int, error) {
	var recs []Record
	complete := bytes.LastIndexByte(data, '\n') + 1
	for i, line := range bytes.Split(data[:complete], []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r Record
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, 0, fmt.Errorf("line %d: %w", i+1, err)
		}
		recs = append(recs, r)
	}
	return recs, complete, nil
}

// dedupeKey follows WeChat's client_msg_id rule (one message per openid + id) for all providers, so a
// redelivery of the same notice is absorbed while a different recipient is not.
type dedupeKey struct{ provider, deliveryID, to string }

// store is the sandbox's memory of accepted messages: the dedupe index and the append-only files.
type store struct {
	mu     sync.Mutex
	files  map[string]*os.File // by provider; nil map when records are not persisted
	seen   map[dedupeKey]Record
	byTo   map[string][]Record // provider + "|" + recipient → accepted records, for the lookup APIs
	counts map[string]int
	maxID  int64 // largest number inside any provider id seen, so a restart never reissues one
}

// openStore rebuilds the dedupe index from the files already in dir, so that a restarted sandbox
// still answers a repeat with the original response, then opens the files for appending.
func openStore(dir string) (*store, error) {
	st := &store{seen: map[dedupeKey]Record{}, byTo: map[string][]Record{}, counts: map[string]int{}}
	if dir == "" {
		return st, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sandbox: records dir: %w", err)
	}
	opened := map[string]*os.File{}
	closeOpened := func() {
		for _, f := range opened {
			_ = f.Close() // already failing; the open error is the one worth reporting
		}
	}
	for _, name := range []string{WeChatFile, SMSFile} {
		path := filepath.Join(dir, name)
		if err := st.load(path); err != nil {
			closeOpened()
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			closeOpened()
			return nil, fmt.Errorf("sandbox: open records: %w", err)
		}
		opened[name] = f
	}
	st.files = map[string]*os.File{}
	st.files[ProviderWeChat] = opened[WeChatFile]
	st.files[ProviderTencent] = opened[SMSFile]
	st.files[ProviderAliyun] = opened[SMSFile]
	return st, nil
}

// load indexes path and cuts off a torn last line, which would otherwise glue itself to the next
// record appended.
func (st *store) load(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sandbox: read records: %w", err)
	}
	recs, complete, err := parseRecords(data)
	if err != nil {
		return fmt.Errorf("sandbox: %s: %w", path, err)
	}
	if complete < len(data) {
		if err := os.Truncate(path, int64(complete)); err != nil {
			return fmt.Errorf("sandbox: drop torn record: %w", err)
		}
	}
	for _, r := range recs {
		st.index(r)
	}
	return nil
}

func (st *store) index(r Record) {
	if r.DeliveryID != "" {
		st.seen[dedupeKey{r.Provider, r.DeliveryID, r.To}] = r
	}
	st.byTo[r.Provider+"|"+r.To] = append(st.byTo[r.Provider+"|"+r.To], r)
	st.counts[r.Provider]++
	st.maxID = max(st.maxID, idNumber(r.ProviderID))
}

// sentTo returns what provider accepted for recipient.
func (st *store) sentTo(provider, recipient string) []Record {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]Record(nil), st.byTo[provider+"|"+recipient]...)
}

// idNumber extracts the counter from the provider id formats the sandbox issues: "N" (WeChat),
// "3369:N" (Tencent) and "N^0" (Aliyun).
func idNumber(id string) int64 {
	var best int64
	for _, f := range strings.FieldsFunc(id, func(r rune) bool { return r < '0' || r > '9' }) {
		if n, err := strconv.ParseInt(f, 10, 64); err == nil {
			best = max(best, n)
		}
	}
	return best
}

// accept records r unless the same delivery id already reached the same recipient, in which case
// the earlier record is returned with dup set and nothing is written. Each record is a single write
// on an O_APPEND file, so a crash can tear at most the last line, which load and ReadRecords handle.
func (st *store) accept(r Record) (Record, bool, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if r.DeliveryID != "" {
		if prev, ok := st.seen[dedupeKey{r.Provider, r.DeliveryID, r.To}]; ok {
			return prev, true, nil
		}
	}
	if f := st.files[r.Provider]; f != nil {
		line, err := json.Marshal(r)
		if err != nil {
			return Record{}, false, fmt.Errorf("sandbox: encode record: %w", err)
		}
		if _, err := f.Write(append(line, '\n')); err != nil {
			return Record{}, false, fmt.Errorf("sandbox: append record: %w", err)
		}
	}
	st.index(r)
	return r, false, nil
}

func (st *store) countsCopy() map[string]int {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make(map[string]int, len(st.counts))
	for k, v := range st.counts {
		out[k] = v
	}
	return out
}

// close closes each file once (both SMS providers share one).
func (st *store) close() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	var errs []error
	done := map[*os.File]bool{}
	for _, f := range st.files {
		if f == nil || done[f] {
			continue
		}
		done[f] = true
		if err := f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("sandbox: close records: %w", err))
		}
	}
	st.files = nil
	return errors.Join(errs...)
}
