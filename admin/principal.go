package admin

import (
	"sort"
	"strings"

	"github.com/policypush/policypush/store"
)

// Perm is one thing a principal may do. Routes name the permission they need; roles and API
// tokens are sets of permissions. Firm data is further narrowed by the principal's scope.
type Perm string

const (
	permPublic       Perm = ""                // anyone, no sign-in (login, health, enterprise links)
	permSigned       Perm = "signed"          // a provider's callback: public, the handler checks its signature or token
	PermSignedIn     Perm = "session"         // any signed-in staff member
	PermPolicyRead   Perm = "policy:read"     // policy library, versions, field catalog
	PermPolicyAuthor Perm = "policy:author"   // write drafts of the own department, test, submit
	PermPolicyReview Perm = "policy:review"   // approve or reject others' drafts, publish, retire
	PermPreview      Perm = "policy:preview"  // publish preview with sample firms (authors: own department)
	PermFirmRead     Perm = "firm:read"       // matched firms, firm pages, near misses (in scope)
	PermFirmNote     Perm = "firm:note"       // write follow-up notes (in scope)
	PermFirmExport   Perm = "firm:export"     // export what the filter shows (in scope)
	PermContact      Perm = "firm:contact"    // see unmasked contact phone (in scope, park managers)
	PermDashboard    Perm = "dashboard:read"  // funnel and amounts (in scope)
	PermDeliveryRead Perm = "delivery:read"   // failed-delivery log (in scope)
	PermResend       Perm = "delivery:resend" // resend a failed delivery
	PermAuditRead    Perm = "audit:read"      // audit log
	PermUserAdmin    Perm = "user:admin"      // accounts and API tokens
	PermRegistry     Perm = "registry:write"  // push registry changes (integrations)
	PermSandbox      Perm = "sandbox:read"    // what the sandbox providers received (demo)
	PermPayoutRead   Perm = "payout:read"     // payout batches (lines narrowed to the scope)
	PermPayoutWrite  Perm = "payout:write"    // create, publicize, export, import results (own department)
	PermPayoutReview Perm = "payout:review"   // approve (not one's own batch), remove lines, decide objections
)

// Role labels shown in the console.
var roleLabels = map[string]string{
	store.RoleAdmin:    "系统管理员",
	store.RoleAuthor:   "政策起草人",
	store.RoleReviewer: "政策审核人",
	store.RolePark:     "园区管理员",
	store.RoleDistrict: "区县/市负责人",
	store.RoleAuditor:  "审计员（只读）",
}

// rolePerms is least privilege per role: a system admin runs the system but writes no policy and
// sees no contact data; authors and reviewers see no firm lists; only a park manager sees the
// contact phone, and only of firms in the own park.
var rolePerms = map[string][]Perm{
	store.RoleAdmin: {PermSignedIn, PermPolicyRead, PermFirmRead, PermFirmExport, PermDashboard, PermDeliveryRead,
		PermResend, PermAuditRead, PermUserAdmin, PermRegistry, PermSandbox, PermPayoutRead},
	store.RoleAuthor:   {PermSignedIn, PermPolicyRead, PermPolicyAuthor, PermPreview, PermDashboard, PermPayoutRead, PermPayoutWrite},
	store.RoleReviewer: {PermSignedIn, PermPolicyRead, PermPolicyReview, PermPreview, PermDashboard, PermPayoutRead, PermPayoutReview},
	store.RolePark: {PermSignedIn, PermPolicyRead, PermFirmRead, PermFirmNote, PermFirmExport, PermContact,
		PermDashboard, PermDeliveryRead, PermPayoutRead},
	store.RoleDistrict: {PermSignedIn, PermPolicyRead, PermFirmRead, PermFirmNote, PermFirmExport, PermDashboard,
		PermDeliveryRead, PermPayoutRead},
	store.RoleAuditor: {PermSignedIn, PermPolicyRead, PermFirmRead, PermDashboard, PermDeliveryRead, PermAuditRead, PermPayoutRead},
}

// tokenPerms are the permissions an API token may carry: integrations read and push data, they
// never author, review, administer or see contact data.
var tokenPerms = []Perm{PermRegistry, PermPolicyRead, PermFirmRead, PermDashboard}

// Roles lists the valid roles.
func Roles() []string {
	out := make([]string, 0, len(rolePerms))
	for r := range rolePerms {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// Principal is who is asking: a signed-in staff member or an API token.
type Principal struct {
	Name         string // username, or "token:<name>"
	UserID       uint64 // 0 for tokens
	Role         string // empty for tokens
	Department   string
	ParkID       string
	RegionPrefix string
	perms        map[Perm]bool
	csrf         string // the session's CSRF token; empty for API tokens
	viaSession   bool
}

func userPrincipal(u *store.User, csrf string) *Principal {
	p := &Principal{Name: u.Username, UserID: u.ID, Role: u.Role, Department: u.Department, ParkID: u.ParkID,
		RegionPrefix: u.RegionPrefix, perms: map[Perm]bool{}, csrf: csrf, viaSession: true}
	for _, pm := range rolePerms[u.Role] {
		p.perms[pm] = true
	}
	return p
}

func tokenPrincipal(t *store.APIToken) *Principal {
	p := &Principal{Name: "token:" + t.Name, ParkID: t.ParkID, RegionPrefix: t.RegionPrefix, perms: map[Perm]bool{}}
	for _, pm := range parsePerms(t.Permissions) {
		p.perms[pm] = true
	}
	return p
}

func parsePerms(s string) []Perm {
	var out []Perm
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, Perm(f))
		}
	}
	return out
}

// Can reports whether the principal holds a permission.
func (p *Principal) Can(pm Perm) bool {
	if pm == permPublic {
		return true
	}
	return p != nil && p.perms[pm]
}

// RoleLabel is the Chinese name of the role.
func (p *Principal) RoleLabel() string {
	if p.Role == "" {
		return "接口令牌"
	}
	return roleLabels[p.Role]
}

// ScopeLabel says in words which firms the principal may see.
func (p *Principal) ScopeLabel() string {
	switch {
	case p.Role == store.RolePark || p.ParkID != "":
		if p.ParkID == "" {
			return "未指定园区（看不到任何企业）"
		}
		return "园区 " + p.ParkID
	case p.Role == store.RoleDistrict || p.RegionPrefix != "":
		if p.RegionPrefix == "" {
			return "未指定区划（看不到任何企业）"
		}
		return "行政区划 " + p.RegionPrefix + "*"
	case p.Role == store.RoleAuthor:
		return "部门 " + p.Department
	}
	return "全省"
}

// scoped reports whether the principal is limited to a park or region.
func (p *Principal) scoped() bool {
	return p.ParkID != "" || p.RegionPrefix != "" || p.Role == store.RolePark || p.Role == store.RoleDistrict
}

// firmScope is the firms the principal may see, as the store's queries take it. A park manager
// or district official without a park or prefix sees nothing: a missing scope must never widen to
// everything.
func (p *Principal) firmScope() store.FirmScope {
	switch {
	case p.ParkID != "":
		return store.FirmScope{ParkID: p.ParkID}
	case p.RegionPrefix != "":
		return store.FirmScope{RegionPrefix: p.RegionPrefix}
	case p.scoped():
		return store.FirmScope{None: true}
	}
	return store.FirmScope{}
}

// sees reports whether one firm lies in the principal's scope.
func (p *Principal) sees(e *store.Enterprise) bool {
	switch {
	case p.ParkID != "":
		return e.ParkID == p.ParkID
	case p.RegionPrefix != "":
		return strings.HasPrefix(e.RegionCode, p.RegionPrefix)
	}
	return !p.scoped()
}

// seesContact reports whether the principal may see a firm's unmasked contact phone: a park
// manager, for firms of the own park.
func (p *Principal) seesContact(e *store.Enterprise) bool {
	return p.Can(PermContact) && p.ParkID != "" && e.ParkID == p.ParkID
}

// MaskPhone keeps the first three and last four digits: 138****1234.
func MaskPhone(p string) string {
	r := []rune(p)
	if len(r) < 8 {
		if len(r) == 0 {
			return ""
		}
		return "****"
	}
	return string(r[:3]) + "****" + string(r[len(r)-4:])
}

// MaskOpenID shows that a WeChat account is bound without revealing it.
func MaskOpenID(id string) string {
	r := []rune(id)
	switch {
	case len(r) == 0:
		return ""
	case len(r) <= 8:
		return "****"
	}
	return string(r[:4]) + "****" + string(r[len(r)-2:])
}
