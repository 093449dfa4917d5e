package store

import (
	"context"
	"fmt"
	"os"
	"time"

	"gorm.io/gorm"
)

func init() { Register(&CommandRun{}) }

// Outcomes of a CommandRun.
const (
	RunRunning     = "running"
	RunOK          = "ok"
	RunFailed      = "failed"
	RunInterrupted = "interrupted" // found unfinished by a later run: the process was killed
)

// CommandRun records one run of a long command (demo seeding, import, match): a row is written
// when it starts and completed when it ends, so a run that was killed leaves a row without
// FinishedAt that the next run detects, reports and marks interrupted.
type CommandRun struct {
	ID         uint64     `gorm:"primaryKey;autoIncrement" json:"id"`
	Command    string     `gorm:"size:64;not null;index:ix_command_run,priority:1" json:"command"`
	Detail     string     `gorm:"type:text" json:"detail"` // what the run was asked to do (file, size, as-of)
	Host       string     `gorm:"size:128;not null;default:''" json:"host"`
	PID        int        `gorm:"not null;default:0" json:"pid"`
	Outcome    string     `gorm:"size:16;not null" json:"outcome"`
	Message    string     `gorm:"type:text" json:"message"`
	StartedAt  time.Time  `gorm:"not null;index:ix_command_run,priority:2" json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

// StartRun records that command starts on this host and process.
func StartRun(ctx context.Context, db *gorm.DB, command, detail string) (*CommandRun, error) {
	host, _ := os.Hostname()
	r := &CommandRun{Command: command, Detail: detail, Host: host, PID: os.Getpid(), Outcome: RunRunning, StartedAt: time.Now().UTC()}
	if err := db.WithContext(ctx).Create(r).Error; err != nil {
		return nil, fmt.Errorf("record the start of %s: %w", command, err)
	}
	return r, nil
}

// FinishRun records how a run ended (err nil: ok). It uses its own short context: a run ended by
// a cancelled context must still be recorded.
func FinishRun(db *gorm.DB, r *CommandRun, err error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now().UTC()
	outcome, msg := RunOK, ""
	if err != nil {
		outcome, msg = RunFailed, err.Error()
	}
	if e := db.WithContext(ctx).Model(r).Updates(map[string]any{"outcome": outcome, "message": msg, "finished_at": now}).Error; e != nil {
		return fmt.Errorf("record the end of %s: %w", r.Command, e)
	}
	r.Outcome, r.Message, r.FinishedAt = outcome, msg, &now
	return nil
}

// UnfinishedRuns lists the runs of command that have no end, oldest first.
func UnfinishedRuns(ctx context.Context, db *gorm.DB, command string) ([]CommandRun, error) {
	var out []CommandRun
	if err := db.WithContext(ctx).Where("command = ? AND finished_at IS NULL", command).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("read runs of %s: %w", command, err)
	}
	return out, nil
}

// MarkInterrupted closes a run that a later one found unfinished.
func MarkInterrupted(ctx context.Context, db *gorm.DB, r *CommandRun, by string) error {
	now := time.Now().UTC()
	msg := "killed or crashed before finishing; found by " + by
	if err := db.WithContext(ctx).Model(r).Updates(map[string]any{"outcome": RunInterrupted, "message": msg, "finished_at": now}).Error; err != nil {
		return fmt.Errorf("mark run %d of %s interrupted: %w", r.ID, r.Command, err)
	}
	r.Outcome, r.Message, r.FinishedAt = RunInterrupted, msg, &now
	return nil
}

// LastRun is the latest finished run of command with outcome ok (nil: none).
func LastRun(ctx context.Context, db *gorm.DB, command string) (*CommandRun, error) {
	var out []CommandRun
	if err := db.WithContext(ctx).Where("command = ? AND outcome = ?", command, RunOK).Order("id DESC").Limit(1).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("read runs of %s: %w", command, err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return &out[0], nil
}
