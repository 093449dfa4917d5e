package registry

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"unicode/utf8"

	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/transform"
)

// csvEncoding is how a CSV file's bytes are read.
type csvEncoding struct {
	name string // shown in the import summary
	gb   bool   // decode GB18030 (a superset of GBK and GB2312) to UTF-8
}

func (e csvEncoding) reader(r io.Reader) io.Reader {
	if e.gb {
		return transform.NewReader(r, simplifiedchinese.GB18030.NewDecoder())
	}
	return r
}

// sniffSize is how much of a stream that cannot be rewound is judged by.
const sniffSize = 1 << 20

// detectEncoding decides whether a CSV is UTF-8 (with or without BOM) or GB18030/GBK, which is
// what Excel on Chinese Windows writes as "CSV (逗号分隔)". A file (io.ReadSeeker) is read to the end
// first, so one that is neither is refused before a single row is written; a stream is judged by
// its first MiB. Text with control characters other than tab and line breaks (binary data, a
// zipped workbook renamed .csv) is neither. It returns the reader to import from.
func detectEncoding(r io.Reader) (csvEncoding, io.Reader, error) {
	var sample io.Reader
	rs, seekable := r.(io.ReadSeeker)
	var br *bufio.Reader
	if seekable {
		sample = r
	} else {
		br = bufio.NewReaderSize(r, sniffSize)
		head, err := br.Peek(sniffSize)
		if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
			return csvEncoding{}, nil, err
		}
		sample = bytes.NewReader(head)
		r = br
	}
	enc, err := judge(sample, !seekable)
	if err != nil {
		return enc, nil, err
	}
	if seekable {
		if _, err := rs.Seek(0, io.SeekStart); err != nil {
			return enc, nil, err
		}
	}
	return enc, r, nil
}

// judge reads the sample through: valid UTF-8 wins; otherwise it must decode cleanly as GB18030.
// truncated says the sample may end inside a character. sample is read twice at most, streaming.
func judge(sample io.Reader, truncated bool) (csvEncoding, error) {
	if truncated {
		raw, err := io.ReadAll(sample)
		if err != nil {
			return csvEncoding{}, err
		}
		sample = bytes.NewReader(trimPartialRune(raw))
	}
	rs, _ := sample.(io.ReadSeeker)
	bad, ctrl, bom, err := scanText(sample, false)
	switch {
	case err != nil:
		return csvEncoding{}, err
	case ctrl > 0:
		return csvEncoding{}, notText(ctrl)
	case bad == 0 && bom:
		return csvEncoding{name: "UTF-8 (BOM)"}, nil
	case bad == 0:
		return csvEncoding{name: "UTF-8"}, nil
	}
	if _, err := rs.Seek(0, io.SeekStart); err != nil {
		return csvEncoding{}, err
	}
	gbBad, ctrl, _, err := scanText(transform.NewReader(rs, simplifiedchinese.GB18030.NewDecoder()), true)
	switch {
	case err != nil:
		return csvEncoding{}, err
	case gbBad == 0 && ctrl > 0:
		return csvEncoding{}, notText(ctrl)
	case gbBad == 0:
		return csvEncoding{name: "GB18030", gb: true}, nil
	}
	return csvEncoding{}, fmt.Errorf("line %d is neither UTF-8 nor GB18030/GBK text; nothing was imported. Save the file as \"CSV UTF-8\" or .xlsx", bad)
}

func notText(line int) error {
	return fmt.Errorf("line %d holds control characters, so this is not a text (CSV) file; nothing was imported. Export the registry as CSV or .xlsx", line)
}

// scanText reads r to the end and returns the line of the first invalid character (decoded: any
// U+FFFD, the decoder's mark for bytes it could not map) and of the first control character other
// than tab, CR and LF; 0 means none. bom reports a leading byte-order mark.
func scanText(r io.Reader, decoded bool) (bad, ctrl int, bom bool, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	line := 1
	for first := true; ; first = false {
		c, size, err := br.ReadRune()
		if err == io.EOF {
			return bad, ctrl, bom, nil
		}
		if err != nil {
			return 0, 0, false, err
		}
		switch {
		case first && c == '\uFEFF':
			bom = true
		case c == utf8.RuneError && (decoded || size <= 1):
			if bad == 0 {
				bad = line
			}
			if !decoded {
				return bad, ctrl, bom, nil // not UTF-8: the caller tries GB18030
			}
		case c == '\n':
			line++
		case c == '\t' || c == '\r':
		case c < 0x20 || c == 0x7f:
			if ctrl == 0 {
				ctrl = line
			}
			return bad, ctrl, bom, nil
		}
	}
}

// trimPartialRune drops an incomplete multi-byte character at the end of a sample (up to 3 bytes
// for UTF-8, up to 3 for a 4-byte GB18030 sequence).
func trimPartialRune(b []byte) []byte {
	for k := 0; k < 3 && len(b) > 0; k++ {
		if utf8.Valid(b) {
			return b
		}
		b = b[:len(b)-1]
	}
	return b
}
