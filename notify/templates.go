package notify

// SMS templates per notice kind. Mainland SMS content goes in as parameters of a pre-approved
// template; each provider limits a parameter's length, so values are cut to the limit here rather
// than rejected by the provider (an approved template cannot be changed to fit a long value).

// Parameter length limits of the providers for ordinary (non-code) variables. Check the limit
// shown with your approved template; a URL parameter is never cut.
const (
	tencentParamLimit = 12
	aliyunParamLimit  = 35
)

// SMSTemplate is the SMS template of one notice kind: the Tencent template id, the Aliyun template
// code and the content fields (ContentFields) in template order. Tencent numbers parameters
// 1..n in that order; Aliyun names each by its field name (${summary}, ${amount} …).
type SMSTemplate struct {
	Tencent, Aliyun string
	Params          []string
}

// values renders the parameters of the template, each cut to limit characters (URL excepted).
func (t SMSTemplate) values(n *Notice, limit int) []string {
	out := make([]string, len(t.Params))
	for i, f := range t.Params {
		v := ContentFields[f](n)
		if f != "url" {
			v = fit(v, limit)
		}
		out[i] = v
	}
	return out
}

// CheckSMSTemplates validates a kind → SMS template mapping.
func CheckSMSTemplates(what string, ts map[string]SMSTemplate) error {
	as := make(map[string]Template, len(ts))
	for kind, t := range ts {
		fields := make(map[string]string, len(t.Params))
		for _, p := range t.Params {
			fields[p] = p
		}
		as[kind] = Template{Fields: fields}
	}
	return CheckTemplates(what, as)
}

// tencentTemplate picks the template id and parameters of a notice for Tencent.
func tencentTemplate(cfg TencentSMSConfig, n Notice) (string, []string) {
	if t, ok := cfg.Templates[KindName(n.Kind)]; ok && t.Tencent != "" && len(t.Params) > 0 {
		return t.Tencent, t.values(&n, tencentParamLimit)
	}
	return cfg.TemplateID, smsParams(n)
}

// aliyunTemplate picks the template code and named parameters of a notice for Aliyun.
func aliyunTemplate(cfg AliyunSMSConfig, n Notice) (string, map[string]string) {
	if t, ok := cfg.Templates[KindName(n.Kind)]; ok && t.Aliyun != "" && len(t.Params) > 0 {
		vs := t.values(&n, aliyunParamLimit)
		out := make(map[string]string, len(vs))
		for i, f := range t.Params {
			out[f] = vs[i]
		}
		return t.Aliyun, out
	}
	p := smsParams(n)
	return cfg.TemplateCode, map[string]string{"policy": p[0], "amount": p[1], "deadline": p[2], "url": p[3]}
}
