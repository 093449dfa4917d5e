package registry

import (
	"fmt"
	"strconv"
	"strings"
)

// sections are the GB/T 4754-2017 sections (门类) by their first and last 2-digit division (大类).
// Every division belongs to exactly one section, so a code written without its letter ("5261", as
// statistics and many registration exports write it) is completed without ambiguity.
var sections = []struct {
	letter   byte
	from, to int
}{
	{'A', 1, 5}, {'B', 6, 12}, {'C', 13, 43}, {'D', 44, 46}, {'E', 47, 50}, {'F', 51, 52},
	{'G', 53, 60}, {'H', 61, 62}, {'I', 63, 65}, {'J', 66, 69}, {'K', 70, 70}, {'L', 71, 72},
	{'M', 73, 75}, {'N', 76, 79}, {'O', 80, 82}, {'P', 83, 83}, {'Q', 84, 85}, {'R', 86, 90},
	{'S', 91, 96}, {'T', 97, 97},
}

// SectionOf returns the section letter of a 2-digit division, or 0 when GB/T 4754-2017 has no
// such division (00, 98, 99).
func SectionOf(division int) byte {
	for _, s := range sections {
		if division >= s.from && division <= s.to {
			return s.letter
		}
	}
	return 0
}

// parseIndustry accepts a GB/T 4754-2017 code with or without its section letter and returns the
// stored form, letter plus digits (C1810).
func parseIndustry(raw string) (any, string, bool) {
	code := strings.ToUpper(raw)
	m := industryRe.FindStringSubmatch(code)
	if m == nil {
		return nil, "is not a GB/T 4754-2017 industry code: write 2–4 digits, with or without the section letter, e.g. C3911 or 3911", false
	}
	div, _ := strconv.Atoi(m[2][:2])
	want := SectionOf(div)
	switch {
	case want == 0:
		return nil, fmt.Sprintf("has division %s, which GB/T 4754-2017 does not define (01–97)", m[2][:2]), false
	case m[1] != "" && m[1][0] != want:
		return nil, fmt.Sprintf("has section letter %s, but division %s belongs to section %c", m[1], m[2][:2], want), false
	}
	return string(want) + m[2], "", false
}
