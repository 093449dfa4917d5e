// Package registry owns the enterprise registry as data: the field catalog (what each column of
// store.Enterprise means, in which unit, from which department), the GB 32100 credit-code rules,
// parsing and importing departmental exports (CSV, XLSX) into the enterprises table, and the
// deterministic synthetic Jiangsu registry used by the demo, tests and benchmarks.
//
// It must not decide eligibility or size class (rules and matcher do that, with their own
// versioned thresholds), must not notify anyone, and must not change the schema: store owns the
// tables, registry only reads and upserts enterprises rows. A bad row is reported, never fatal;
// only I/O and database failures abort an import.
package registry
