// Package policies is the policy catalog: the database workflow around the rule language of
// package rules. It stores definitions as immutable versions and moves them through the review
// lifecycle (drafts, submit, review, publish, retire, file-based apply), loads and links the
// published catalog (LoadPublished), previews a version on the live registry, explains a stored
// firm against a stored version, runs the calculator on the published catalog, loads firms and
// their extra facts, and imports extra facts.
//
// Package rules is the language itself — parse, check, compile, evaluate, explain — and never
// touches the database; this package is where gorm and the store meet it.
package policies
