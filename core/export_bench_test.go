package core

import (
	"context"
	"database/sql"
	"encoding/csv"
	"fmt"
	"io"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/testenv"
)

// BenchmarkExportMatches exports the active matches of a seeded database (200,000 by default:
// 20,000 firms × 10 policies; set POLICYPUSH_BENCH_EXPORT_FIRMS to change) through
// core.ExportMatches as CSV and xlsx, beside two baselines in the same run:
//
//   - scan-csv: the same SELECT scanned with database/sql into encoding/csv (no escaping, no
//     audit) — the floor;
//   - slice-csv: the former implementation, every row scanned by gorm into a slice first, then
//     written — what streaming replaced.
//
// Each variant runs twice, interleaved (A B C A B C), since the machine is shared. Reported per
// variant: rows/s, alloc-B/row (bytes allocated per row) and peak-heap-MB (the highest live heap
// above the heap before the export, sampled every millisecond). Run:
//
//	go test -run '^$' -bench ExportMatches -benchtime 3x ./core/
func BenchmarkExportMatches(b *testing.B) {
	firms := 20000
	if v, err := strconv.Atoi(getenv("POLICYPUSH_BENCH_EXPORT_FIRMS")); err == nil && v > 0 {
		firms = v
	}
	const policies = 10
	db := testenv.OpenDB(b).DB
	t0 := time.Now()
	seedMatches(b, db, firms, policies)
	b.Logf("seeded %d matches in %s", firms*policies, time.Since(t0).Round(time.Millisecond))
	s := New(db, Options{})
	want := firms * policies
	variants := []struct {
		name string
		run  func(w io.Writer) (int, error)
	}{
		{"scan-csv", func(w io.Writer) (int, error) { return scanCSV(s, w) }},
		{"slice-csv", func(w io.Writer) (int, error) { return sliceCSV(s, w) }},
		{"core-csv", func(w io.Writer) (int, error) { return coreExport(s, w, FormatCSV) }},
		{"core-xlsx", func(w io.Writer) (int, error) { return coreExport(s, w, FormatXLSX) }},
	}
	for round := range 2 {
		for _, v := range variants {
			b.Run(fmt.Sprintf("%s/round%d", v.name, round+1), func(b *testing.B) {
				var rows int
				peak := newPeakHeap()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				start := time.Now()
				for b.Loop() {
					n, err := v.run(io.Discard)
					if err != nil || n != want {
						b.Fatalf("%d rows (want %d): %v", n, want, err)
					}
					rows += n
				}
				elapsed := time.Since(start)
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(rows)/elapsed.Seconds(), "rows/s")
				b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(rows), "alloc-B/row")
				b.ReportMetric(float64(peak.stop())/(1<<20), "peak-heap-MB")
			})
		}
	}
}

func coreExport(s *Service, w io.Writer, f Format) (int, error) {
	sum, err := s.ExportMatches(context.Background(), w, MatchExport{Actor: "bench", Format: f, Table: DataTable,
		Query: s.ActiveMatches(context.Background(), ""), Record: DataRecord})
	return sum.Rows, err
}

// scanCSV is the floor: the same statement as core's, database/sql scanning, encoding/csv writing.
func scanCSV(s *Service, w io.Writer) (int, error) {
	sqlDB, err := s.db.DB()
	if err != nil {
		return 0, err
	}
	stmt := s.db.ToSQL(func(tx *gorm.DB) *gorm.DB {
		return s.ActiveMatches(context.Background(), "").Session(&gorm.Session{DryRun: true}).Find(&[]map[string]any{})
	})
	rows, err := sqlDB.Query(stmt)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	cw := csv.NewWriter(w)
	_ = cw.Write(DataTable.Header)
	var pid, code, name, region, park sql.NullString
	var amount sql.NullFloat64
	var version int64
	var asOf, matchedAt sql.NullTime
	rec := make([]string, 9)
	n := 0
	for rows.Next() {
		if err := rows.Scan(&pid, &code, &amount, &version, &asOf, &name, &region, &park, &matchedAt); err != nil {
			return n, err
		}
		rec[0], rec[1], rec[2] = pid.String, code.String, ""
		if amount.Valid {
			rec[2] = strconv.FormatFloat(amount.Float64, 'f', 2, 64)
		}
		rec[3], rec[4] = strconv.FormatInt(version, 10), asOf.Time.Format(time.DateOnly)
		rec[5], rec[6], rec[7], rec[8] = name.String, region.String, park.String, matchedAt.Time.UTC().Format(time.RFC3339)
		if err := cw.Write(rec); err != nil {
			return n, err
		}
		n++
	}
	cw.Flush()
	return n, rows.Err()
}

// sliceCSV is the export as it was before streaming: its query (sorted by policy and credit code,
// which SQLite's planner serves with a sort of every active match), gorm scanning every row into
// a slice, then the slice written.
func sliceCSV(s *Service, w io.Writer) (int, error) {
	type row struct {
		PolicyID      string
		CreditCode    string
		Amount        *float64
		PolicyVersion int
		AsOf          time.Time
		Name          string
		RegionCode    string
		ParkID        string
		MatchedAt     time.Time
	}
	var rows []row
	if err := s.db.Table("matches AS m").
		Select("m.policy_id, m.credit_code, m.amount, m.policy_version, m.as_of, e.name, e.region_code, e.park_id, m.matched_at").
		Joins("LEFT JOIN enterprises e ON e.credit_code = m.credit_code").
		Where("m.state = ?", "active").Order("m.policy_id, m.credit_code").Scan(&rows).Error; err != nil {
		return 0, err
	}
	cw := csv.NewWriter(w)
	_ = cw.Write(DataTable.Header)
	for _, r := range rows {
		amount := ""
		if r.Amount != nil {
			amount = strconv.FormatFloat(*r.Amount, 'f', 2, 64)
		}
		_ = cw.Write([]string{r.PolicyID, r.CreditCode, amount, strconv.Itoa(r.PolicyVersion), r.AsOf.Format("2006-01-02"),
			r.Name, r.RegionCode, r.ParkID, r.MatchedAt.UTC().Format(time.RFC3339)})
	}
	cw.Flush()
	return len(rows), cw.Error()
}

// peakHeap samples the live heap every millisecond until stop and returns its peak above the
// heap at the start.
type peakHeap struct {
	base uint64
	peak uint64
	done chan struct{}
	wg   sync.WaitGroup
}

const heapMetric = "/memory/classes/heap/objects:bytes"

func heapNow() uint64 {
	s := []metrics.Sample{{Name: heapMetric}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func newPeakHeap() *peakHeap {
	runtime.GC()
	p := &peakHeap{base: heapNow(), done: make(chan struct{})}
	p.peak = p.base
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
				if h := heapNow(); h > p.peak {
					p.peak = h
				}
			}
		}
	}()
	return p
}

func (p *peakHeap) stop() uint64 {
	close(p.done)
	p.wg.Wait()
	return p.peak - p.base
}
