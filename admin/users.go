package admin

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/store"
)

// Accounts and API tokens, for the system admin.

type userRow struct {
	store.User
	RoleLabel string `json:"role_label"`
	// LoginFailures are the failed sign-ins inside the throttling window (an admin can clear them).
	LoginFailures int64 `json:"login_failures"`
}

type usersView struct {
	Users     []userRow        `json:"users"`
	Tokens    []store.APIToken `json:"tokens"`
	Roles     []option         `json:"-"`
	TokenPerm []option         `json:"-"`
	NewSecret string           `json:"-"` // a token just created, shown once
}

func (s *Server) readUsers(r *http.Request) (usersView, error) {
	ctx := r.Context()
	var v usersView
	users, err := store.Users(ctx, s.opts.DB)
	if err != nil {
		return v, err
	}
	failed, err := store.FailedLoginsByUser(ctx, s.opts.DB, s.now().Add(-s.opts.LoginWindow))
	if err != nil {
		return v, err
	}
	for _, u := range users {
		v.Users = append(v.Users, userRow{User: u, RoleLabel: roleLabels[u.Role], LoginFailures: failed[u.Username]})
	}
	if v.Tokens, err = store.Tokens(ctx, s.opts.DB); err != nil {
		return v, err
	}
	for _, role := range Roles() {
		v.Roles = append(v.Roles, option{role, roleLabels[role]})
	}
	for _, pm := range tokenPerms {
		v.TokenPerm = append(v.TokenPerm, option{string(pm), permLabels[pm]})
	}
	return v, nil
}

var permLabels = map[Perm]string{
	PermRegistry: "推送企业名录变更", PermPolicyRead: "读取政策库", PermFirmRead: "读取匹配企业（按范围）",
	PermDashboard: "读取统计",
}

func (s *Server) usersPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	v, err := s.readUsers(r)
	s.show(w, r, p, err, "users", "账号与令牌", v)
}

func (s *Server) apiUsers(w http.ResponseWriter, r *http.Request, p *Principal) {
	v, err := s.readUsers(r)
	s.answer(w, r, v, err)
}

// userInput is an account to create through the console or the API.
type userInput struct {
	Username     string `json:"username"`
	Password     string `json:"password"`
	Role         string `json:"role"`
	Department   string `json:"department"`
	ParkID       string `json:"park_id"`
	RegionPrefix string `json:"region_prefix"`
}

func (in userInput) newUser() NewUser {
	return NewUser{Username: strings.TrimSpace(in.Username), Password: in.Password, Role: in.Role,
		Department: in.Department, ParkID: strings.TrimSpace(in.ParkID), RegionPrefix: strings.TrimSpace(in.RegionPrefix)}
}

func (s *Server) userPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	in := userInput{Username: r.PostFormValue("username"), Password: r.PostFormValue("password"), Role: r.PostFormValue("role"),
		Department: r.PostFormValue("department"), ParkID: r.PostFormValue("park_id"), RegionPrefix: r.PostFormValue("region_prefix")}
	if _, err := CreateUser(r.Context(), s.opts.DB, in.newUser(), p.Name); err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error(), nil)
		return
	}
	redirect(w, r, "/users", "user")
}

func (s *Server) apiUserPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	var in userInput
	if !s.readJSON(w, r, &in) {
		return
	}
	u, err := CreateUser(r.Context(), s.opts.DB, in.newUser(), p.Name)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusCreated, userRow{User: u, RoleLabel: roleLabels[u.Role]})
}

// tokenInput is a token to issue.
type tokenInput struct {
	Name         string   `json:"name"`
	Permissions  []string `json:"permissions"`
	ParkID       string   `json:"park_id"`
	RegionPrefix string   `json:"region_prefix"`
	TTLDays      int      `json:"ttl_days"`
}

func (in tokenInput) newToken() (NewAPIToken, error) {
	if in.TTLDays < 0 || in.TTLDays > 3650 {
		return NewAPIToken{}, badRequest("ttl_days 须为 0（不过期）到 3650")
	}
	nt := NewAPIToken{Name: in.Name, ParkID: strings.TrimSpace(in.ParkID), RegionPrefix: strings.TrimSpace(in.RegionPrefix),
		TTL: time.Duration(in.TTLDays) * 24 * time.Hour}
	for _, pm := range in.Permissions {
		nt.Permissions = append(nt.Permissions, Perm(pm))
	}
	return nt, nil
}

func (s *Server) tokenPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	days, _ := strconv.Atoi(r.PostFormValue("ttl_days"))
	_ = r.ParseForm()
	in := tokenInput{Name: r.PostFormValue("name"), Permissions: r.PostForm["permissions"], ParkID: r.PostFormValue("park_id"),
		RegionPrefix: r.PostFormValue("region_prefix"), TTLDays: days}
	_, secret, err := s.createToken(r, p, in)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	v, err := s.readUsers(r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	// The secret is shown on this response only (no redirect: it must not travel in a URL).
	v.NewSecret = secret
	s.render(w, r, p, "users", "账号与令牌", v)
}

func (s *Server) apiTokenPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	var in tokenInput
	if !s.readJSON(w, r, &in) {
		return
	}
	t, secret, err := s.createToken(r, p, in)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"token": t, "secret": secret})
}

// createToken creates the API token in asks for, on behalf of p: what the form and the API post.
// A token the store refuses is a bad request.
func (s *Server) createToken(r *http.Request, p *Principal, in tokenInput) (store.APIToken, string, error) {
	nt, err := in.newToken()
	if err != nil {
		return store.APIToken{}, "", err
	}
	t, secret, err := CreateAPIToken(r.Context(), s.opts.DB, nt, p.Name, s.now())
	if err != nil {
		return t, "", badRequest("%s", err.Error())
	}
	return t, secret, nil
}

func (s *Server) revokeToken(r *http.Request, p *Principal, idText string) error {
	id, err := strconv.ParseUint(idText, 10, 64)
	if err != nil {
		return badRequest("令牌编号 %q 无效", idText)
	}
	err = store.RevokeToken(r.Context(), s.opts.DB, id, s.now(), func(tx *gorm.DB, t store.APIToken) error {
		return writeAudit(tx, p.Name, audit.TokenRevoke, t.Name, map[string]any{"id": t.ID, "prefix": t.Prefix})
	})
	if errors.Is(err, store.ErrNotFound) {
		return notFound("没有编号为 %d 的令牌", id)
	}
	return err
}

func (s *Server) tokenRevokePost(w http.ResponseWriter, r *http.Request, p *Principal) {
	if err := s.revokeToken(r, p, r.PathValue("id")); err != nil {
		s.failErr(w, r, err)
		return
	}
	redirect(w, r, "/users", "revoked")
}

func (s *Server) apiTokenDelete(w http.ResponseWriter, r *http.Request, p *Principal) {
	if err := s.revokeToken(r, p, r.PathValue("id")); err != nil {
		s.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) unlockPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	if _, err := UnlockLogin(r.Context(), s.opts.DB, r.PathValue("username"), "", p.Name); err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error(), nil)
		return
	}
	redirect(w, r, "/users", "unlocked")
}

// unlockInput optionally names a client address whose failures to clear as well.
type unlockInput struct {
	Addr string `json:"addr"`
}

func (s *Server) apiUnlock(w http.ResponseWriter, r *http.Request, p *Principal) {
	var in unlockInput
	if r.ContentLength != 0 {
		if !s.readJSON(w, r, &in) {
			return
		}
	}
	n, err := UnlockLogin(r.Context(), s.opts.DB, r.PathValue("username"), in.Addr, p.Name)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"username": r.PathValue("username"), "cleared": n})
}
