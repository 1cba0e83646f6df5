package domain

import "strings"

// CouplingAction is one of a person's coupling actions, as the page's button and the CLI's
// command (`dvsync couplings <command> TABLE KEY`) name it. Advice texts name the actions through
// these, so that what they say is what the page and the CLI show.
type CouplingAction struct{ Button, Command string }

// The manual coupling actions, Business Central's "Set Up Coupling", "Delete Coupling",
// "Synchronize" and, for a record deleted on one side, "Restore Records" (page 5333).
var (
	ActionCouple         = CouplingAction{"Couple", "couple"}
	ActionUncouple       = CouplingAction{"Uncouple", "uncouple"}
	ActionSyncNow        = CouplingAction{"Sync now", "sync"}
	ActionRestore        = CouplingAction{"Restore", "restore"}
	ActionDeleteCoupling = CouplingAction{"Delete coupling", "delete-coupling"}
)

// CouplingActions are every manual coupling action.
var CouplingActions = []CouplingAction{ActionCouple, ActionUncouple, ActionSyncNow, ActionRestore, ActionDeleteCoupling}

// CLI is the command line that runs the action on a record; more are its further arguments (the
// row id of couple).
func (a CouplingAction) CLI(table, key string, more ...string) string {
	args := append([]string{"dvsync couplings", a.Command, shellWord(table), shellWord(key)}, more...)
	return strings.Join(args, " ")
}

// shellWord quotes a word a shell would split or expand.
func shellWord(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r == ':' || r == '/' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// rowDeletedActions is the advice for a record whose Dataverse row was deleted, as Business
// Central's page 5333 offers it.
var rowDeletedActions = "choose " + ActionRestore.Button + " (create the Dataverse row again and couple it) or " +
	ActionDeleteCoupling.Button + " on the error's page or the Coupled records page"
