// Package registry owns the enterprise registry as data: the field catalog (what each column of
// store.Enterprise means, in which unit, from which department), the GB 32100 credit-code rules,
// and the one door every firm record comes through — parsing and checking a record the same way
// whether it arrives in a departmental export (CSV in UTF-8 or GB18030, XLSX), a change message
// (HTTP, NATS) or a row of the data-sharing platform's own table (the SQL source, synced
// incrementally) — and the deterministic synthetic Jiangsu registry used by the demo, tests and
// benchmarks. Writers that also re-match (the matcher engine) plug in as a Sink.
//
// It must not decide eligibility or size class (rules and matcher do that, with their own
// versioned thresholds), must not notify anyone, and must not change the schema: store owns the
// tables, registry only reads and upserts enterprises rows (and its sync cursor), and it never
// writes to the SQL source. A bad row is reported, never fatal; only I/O and database failures abort
// an import or a sync.
package registry
