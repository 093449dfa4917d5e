package payout

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// BenchmarkExport writes the payment file of a batch of 50,000 lines (go test -bench Export
// ./payout/): the time per file and, as a check, that the rows and total are the batch's.
func BenchmarkExport(b *testing.B) {
	const n = 50000
	db := testenv.OpenDB(b).DB
	past := time.Now().Add(-time.Hour)
	batch := store.PayoutBatch{PolicyID: "p", Round: 1, State: store.BatchExported, Firms: n, CreatedBy: "x", CreatedAt: past,
		AsOf: past, PublicizedAt: &past, PublicizeUntil: &past}
	if err := db.Create(&batch).Error; err != nil {
		b.Fatal(err)
	}
	lines := make([]store.PayoutLine, n)
	var total int64
	for i := range lines {
		fen := int64(100000 + i*37)
		total += fen
		lines[i] = store.PayoutLine{BatchID: batch.ID, CreditCode: fmt.Sprintf("91320000%010d", i), PolicyID: "p",
			Name: fmt.Sprintf("苏州某某科技有限公司%d", i), AmountFen: fen, State: store.LineExported, UpdatedAt: past}
	}
	if err := db.CreateInBatches(lines, 1000).Error; err != nil {
		b.Fatal(err)
	}
	svc := New(db, Options{})
	for _, format := range []string{FormatCSV, FormatXLSX} {
		b.Run(format, func(b *testing.B) {
			for b.Loop() {
				sum, err := svc.writeFile(context.Background(), batch.ID, format, io.Discard)
				if err != nil || sum.Rows != n || sum.AmountFen != total {
					b.Fatalf("%+v %v", sum, err)
				}
			}
		})
	}
}
