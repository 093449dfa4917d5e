package admin

import (
	"fmt"
	"html/template"
	"math"
	"strings"
)

// Charts are drawn here as inline SVG: no script, no web font, nothing fetched, so they work on an
// air-gapped intranet and print as they look. Every label is escaped.

type bar struct {
	Label string
	Value float64
	Note  string // printed after the bar
}

const (
	chartWidth = 720
	labelWidth = 170
	noteWidth  = 190
	rowHeight  = 28
	chartFont  = `font-family="system-ui, sans-serif" font-size="13"`
)

var esc = template.HTMLEscapeString

func emptyChart() template.HTML { return `<p class="muted">暂无数据</p>` }

// shortLabel keeps a label to n characters; the full text goes into the SVG <title>.
func shortLabel(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func maxValue(bars []bar) float64 {
	m := 0.0
	for _, b := range bars {
		m = math.Max(m, b.Value)
	}
	return m
}

// barChart draws horizontal bars, one row per group.
func barChart(bars []bar) template.HTML {
	if len(bars) == 0 || maxValue(bars) <= 0 {
		return emptyChart()
	}
	top := maxValue(bars)
	area := float64(chartWidth - labelWidth - noteWidth)
	h := len(bars)*rowHeight + 8
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" width="100%%" role="img" aria-label="柱状图" xmlns="http://www.w3.org/2000/svg" %s>`, chartWidth, h, chartFont)
	for i, br := range bars {
		y := i*rowHeight + 4
		w := math.Max(1, br.Value/top*area)
		fmt.Fprintf(&b, `<g><title>%s：%s</title>`, esc(br.Label), esc(br.Note))
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" fill="#1f2328">%s</text>`, labelWidth-8, y+18, esc(shortLabel(br.Label, 12)))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" rx="3" fill="#b42318"/>`, labelWidth, y+4, w, rowHeight-10)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#59636e">%s</text></g>`, float64(labelWidth)+w+6, y+18, esc(br.Note))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// funnelChart draws centred bars that narrow step by step, with each step's share of the first.
func funnelChart(steps []bar) template.HTML {
	if len(steps) == 0 || steps[0].Value <= 0 {
		return emptyChart()
	}
	first := steps[0].Value
	area := float64(chartWidth - labelWidth - noteWidth)
	h := len(steps)*(rowHeight+6) + 8
	center := float64(labelWidth) + area/2
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" width="100%%" role="img" aria-label="漏斗图" xmlns="http://www.w3.org/2000/svg" %s>`, chartWidth, h, chartFont)
	for i, st := range steps {
		y := i*(rowHeight+6) + 4
		w := math.Max(2, st.Value/first*area)
		share := st.Value / first * 100
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" fill="#1f2328">%s</text>`, labelWidth-8, y+19, esc(st.Label))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" rx="3" fill="#b42318" fill-opacity="%.2f"/>`,
			center-w/2, y+2, w, rowHeight, 1-0.13*float64(i))
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#1f2328">%s（%.1f%%）</text>`, chartWidth-noteWidth+8, y+19, formatCount(int64(st.Value)), share)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// columnChart draws one column per point of a series (days), labelling every few columns.
func columnChart(points []bar) template.HTML {
	if len(points) == 0 || maxValue(points) <= 0 {
		return emptyChart()
	}
	top := maxValue(points)
	const h, base, left = 220, 190, 100
	step := float64(chartWidth-left-10) / float64(len(points))
	every := int(math.Ceil(float64(len(points)) / 12))
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" width="100%%" role="img" aria-label="按日柱状图" xmlns="http://www.w3.org/2000/svg" %s>`, chartWidth, h, chartFont)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#d1d9e0"/>`, left, base, chartWidth-10, base)
	fmt.Fprintf(&b, `<text x="%d" y="16" text-anchor="end" fill="#59636e">%s</text>`, left-6, formatCount(int64(top)))
	width := math.Min(step*0.7, 40)
	for i, p := range points {
		x := float64(left) + float64(i)*step
		hh := math.Max(1, p.Value/top*float64(base-24))
		fmt.Fprintf(&b, `<g><title>%s：%s</title><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#b42318"/></g>`,
			esc(p.Label), esc(p.Note), x+(step-width)/2, float64(base)-hh, width, hh)
		if i%every == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#59636e">%s</text>`, x+step/2, base+18, esc(p.Label))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// formatCount writes a count with thousands separators.
func formatCount(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && c != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
