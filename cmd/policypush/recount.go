package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// policypush status recount: the maintained match counts (store.MatchCount, docs/console.md
// "Maintained aggregates") counted again from the matches and firms, and each match's copy of its
// firm's place (store.Match.RegionCode, ParkID) compared with the firm's; the firm counts and the
// delivery counts (store.FirmCount, DeliveryCount) likewise, the latter after the delivery queue is
// drained (that is the pipeline's own work, done with --check too). --check only compares and
// fails when they differ; without it a difference is repaired in one transaction.

func init() { addSubcommand("status", recountCmd) }

// errCountsDiffer is returned by recount --check when the counts differ from the recount.
var errCountsDiffer = errors.New("维护的匹配计数与重新统计的结果不一致（运行 policypush status recount 修复）")

func recountCmd(g *globals) *cobra.Command {
	var check, asJSON bool
	cmd := &cobra.Command{
		Use:   "recount",
		Short: "Recount the maintained match, firm and delivery counts and repair them (--check: compare only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var rep store.RecountReport
			if err := g.withDB(cmd.Context(), func(_ *app, db *gorm.DB) (err error) {
				rep, err = store.Recount(cmd.Context(), db, !check)
				return err
			}); err != nil {
				return err
			}
			if asJSON {
				type diff struct {
					PolicyID   string         `json:"policy_id"`
					RegionCode string         `json:"region_code"`
					ParkID     string         `json:"park_id"`
					State      string         `json:"state"`
					Hour       string         `json:"hour"`
					Stored     store.CountVal `json:"stored"`
					Recount    store.CountVal `json:"recount"`
				}
				out := struct {
					store.RecountReport
					Differences []diff `json:"differences"`
				}{RecountReport: rep, Differences: []diff{}}
				for _, d := range rep.Diffs {
					out.Differences = append(out.Differences, diff{d.Key.PolicyID, d.Key.RegionCode, d.Key.ParkID, d.Key.State, d.Key.Hour, d.Stored, d.Recount})
				}
				if err := writeJSON(os.Stdout, out); err != nil {
					return err
				}
			} else {
				fmt.Printf("匹配 %d 条，计数行 %d 行，不一致 %d 行\n", rep.Matches, rep.Rows, len(rep.Diffs))
				if rep.FirmDiffs > 0 {
					fmt.Printf("  企业 %d 家，企业计数不一致 %d 行\n", rep.Firms, rep.FirmDiffs)
				}
				if rep.DeliveryDiffs > 0 {
					fmt.Printf("  通知 %d 条，通知计数不一致 %d 行\n", rep.Deliveries, rep.DeliveryDiffs)
				}
				if rep.Misplaced > 0 {
					verb := "未随企业记录所在区划和园区"
					if !check {
						verb = "已改为企业当前的区划和园区"
					}
					fmt.Printf("  匹配 %d 条%s\n", rep.Misplaced, verb)
				}
				for i, d := range rep.Diffs {
					if i == 20 {
						fmt.Printf("  …… 另有 %d 行\n", len(rep.Diffs)-20)
						break
					}
					fmt.Printf("  %s %s %s %s %s: 维护值 %d/%d 分，重算 %d/%d 分\n", d.Key.PolicyID, d.Key.RegionCode, orDash(d.Key.ParkID),
						d.Key.State, orDash(d.Key.Hour), d.Stored.N, d.Stored.AmountFen, d.Recount.N, d.Recount.AmountFen)
				}
				if rep.Fixed {
					fmt.Println("已按重新统计的结果修复")
				}
			}
			if check && (len(rep.Diffs) > 0 || rep.Misplaced > 0 || rep.FirmDiffs > 0 || rep.DeliveryDiffs > 0) {
				return errCountsDiffer
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "compare only: exit 1 when the counts differ, change nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
