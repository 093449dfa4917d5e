package sandbox

import (
	"slices"
	"testing"
)

// The sandbox shows a template message as WeChat has since 2023-05-04: no first/remark, one line,
// 20 characters per field, and it records which keys it cut.
func TestWeChatDisplay(t *testing.T) {
	shown, cut := wechatDisplay(map[string]string{
		"first":    "您的企业符合以下惠企政策",
		"remark":   "请点击详情",
		"thing1":   "4项政策合计22,171.26元",
		"keyword1": "失业保险稳岗返还、一次性留工培训补助、一次性扩岗补助",
		"thing2":   "两行\n内容",
	})
	if _, ok := shown["first"]; ok || shown["remark"] != "" {
		t.Errorf("first/remark shown: %v", shown)
	}
	if shown["thing1"] != "4项政策合计22,171.26元" || shown["keyword1"] != "失业保险稳岗返还、一次性留工培训补助、…" || shown["thing2"] != "两行 内容" {
		t.Errorf("shown %v", shown)
	}
	if !slices.Equal(cut, []string{"keyword1"}) {
		t.Errorf("truncated %v, want [keyword1]", cut)
	}
}
