package admin

import (
	"errors"
	"net/http"
	"path/filepath"
	"sort"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

type policyRow struct {
	ID, Title, DocNo, Department string
	Version                      int
	From, To                     string
	Matches                      int64
	Amount                       float64
}

type parkRow struct {
	ParkID  string
	Firms   int64
	Matches int64
}

func (s *Server) today() time.Time { return rules.Day(time.Now(), s.opts.Location) }

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st, err := store.ReadStatus(ctx, s.opts.DB, s.today())
	if err != nil {
		s.fail(w, http.StatusInternalServerError, "无法读取数据库", err)
		return
	}
	var policies []policyRow
	err = s.opts.DB.WithContext(ctx).Table("policies AS p").
		Select(`p.id, v.title, v.doc_no, v.department, v.version,
			(SELECT COUNT(*) FROM matches m WHERE m.policy_id = p.id AND m.state = 'active') AS matches,
			(SELECT COALESCE(SUM(m.amount), 0) FROM matches m WHERE m.policy_id = p.id AND m.state = 'active') AS amount`).
		Joins("JOIN policy_versions v ON v.policy_id = p.id AND v.version = p.published_version").
		Where("p.retired = ?", false).Order("p.id").Scan(&policies).Error
	if err != nil {
		s.fail(w, http.StatusInternalServerError, "无法读取政策", err)
		return
	}
	var parks []parkRow
	err = s.opts.DB.WithContext(ctx).Table("enterprises AS e").
		Select(`e.park_id, COUNT(DISTINCT e.credit_code) AS firms, COUNT(m.id) AS matches`).
		Joins("LEFT JOIN matches m ON m.credit_code = e.credit_code AND m.state = 'active'").
		Where("e.park_id <> ''").Group("e.park_id").Order("e.park_id").Scan(&parks).Error
	if err != nil {
		s.fail(w, http.StatusInternalServerError, "无法读取园区", err)
		return
	}
	s.render(w, "index", map[string]any{"Title": "总览", "Status": st, "Policies": policies, "Parks": parks,
		"Channels": sortedChannels(st.Deliveries)})
}

func sortedChannels(m map[string]map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (s *Server) policyPage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx := r.Context()
	var pol store.Policy
	if err := s.opts.DB.WithContext(ctx).Where("id = ?", id).Take(&pol).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			s.fail(w, http.StatusNotFound, "没有这项政策："+id, nil)
			return
		}
		s.fail(w, http.StatusInternalServerError, "无法读取政策", err)
		return
	}
	var v store.PolicyVersion
	if err := s.opts.DB.WithContext(ctx).Where("policy_id = ? AND version = ?", id, pol.PublishedVersion).Take(&v).Error; err != nil {
		s.fail(w, http.StatusNotFound, "这项政策尚未发布："+id, nil)
		return
	}
	def, err := rules.FromCanonical([]byte(v.Source))
	if err != nil {
		s.fail(w, http.StatusInternalServerError, "政策内容无法读取", err)
		return
	}
	var count int64
	var total float64
	s.opts.DB.WithContext(ctx).Model(&store.Match{}).Where("policy_id = ? AND state = ?", id, store.MatchActive).Count(&count)
	s.opts.DB.WithContext(ctx).Model(&store.Match{}).Where("policy_id = ? AND state = ?", id, store.MatchActive).
		Select("COALESCE(SUM(amount), 0)").Scan(&total)
	s.render(w, "policy", map[string]any{"Title": def.Title, "Def": def, "Version": v, "Matches": count, "Total": total})
}

type parkMatch struct {
	CreditCode   string
	Name         string
	IndustryCode string
	ContactPhone string
	PolicyID     string
	Title        string
	Amount       *float64
	WeChat       string
	SMS          string
}

func (s *Server) parkPage(w http.ResponseWriter, r *http.Request) {
	park := r.PathValue("park")
	ctx := r.Context()
	var rows []parkMatch
	err := s.opts.DB.WithContext(ctx).Table("matches AS m").
		Select(`m.credit_code, e.name, e.industry_code, e.contact_phone, m.policy_id, v.title, m.amount,
			COALESCE((SELECT d.state FROM deliveries d WHERE d.match_id = m.id AND d.channel = 'wechat' ORDER BY d.id DESC LIMIT 1), '') AS we_chat,
			COALESCE((SELECT d.state FROM deliveries d WHERE d.match_id = m.id AND d.channel = 'sms' ORDER BY d.id DESC LIMIT 1), '') AS sms`).
		Joins("JOIN enterprises e ON e.credit_code = m.credit_code").
		Joins("JOIN policy_versions v ON v.policy_id = m.policy_id AND v.version = m.policy_version").
		Where("m.state = ? AND e.park_id = ?", store.MatchActive, park).
		Order("e.name, m.policy_id").Limit(2000).Scan(&rows).Error
	if err != nil {
		s.fail(w, http.StatusInternalServerError, "无法读取匹配结果", err)
		return
	}
	s.render(w, "park", map[string]any{"Title": "园区 " + park, "Park": park, "Rows": rows})
}

func (s *Server) sandboxPage(w http.ResponseWriter, r *http.Request) {
	if s.opts.SandboxDir == "" {
		s.fail(w, http.StatusNotFound, "本实例未运行沙箱（生产模式）", nil)
		return
	}
	var recs []sandbox.Record
	for _, f := range []string{"wechat.jsonl", "sms.jsonl"} {
		got, err := sandbox.ReadRecords(filepath.Join(s.opts.SandboxDir, f))
		if err != nil {
			continue
		}
		recs = append(recs, got...)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].At.After(recs[j].At) })
	total := len(recs)
	if len(recs) > 200 {
		recs = recs[:200]
	}
	for i := range recs {
		recs[i].To = MaskPhone(recs[i].To)
	}
	s.render(w, "sandbox", map[string]any{"Title": "沙箱：企业收到的消息", "Records": recs, "Total": total})
}

func (s *Server) apiStatus(w http.ResponseWriter, r *http.Request) {
	st, err := store.ReadStatus(r.Context(), s.opts.DB, s.today())
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "无法读取数据库：" + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, st)
}
