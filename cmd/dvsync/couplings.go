package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/dvsync/dvsync/consumers/coupling"
	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/mappingfile"
	"github.com/dvsync/dvsync/infra/natsjs"
)

// couplingActions are the coupling actions the API and the page run. The mappings are the
// worker's (the entity a record couples to); the Dataverse row a record is coupled to is checked
// where this process talks to Dataverse (dev), else the next sync finds out.
func (s *stack) couplingActions(replayer *replay.Replayer) (*coupling.Actions, error) {
	ms := s.mappings
	if ms == nil {
		ms = domain.DefaultMappings()
		if s.cfg.MappingsFile != "" {
			var err error
			if ms, err = mappingfile.Load(s.cfg.MappingsFile); err != nil {
				return nil, err
			}
		}
	}
	a := &coupling.Actions{Store: s.store, Mappings: ms, Replay: replayer, Changes: natsjs.ChangeFinder{JS: s.js}, JS: s.js,
		Log: s.log.With("component", "coupling")}
	if s.dv != nil {
		a.Rows = s.dv
	}
	return a, nil
}

const couplingsUsage = `Usage: dvsync couplings <command> TABLE KEY [ROW] [flags]

  couple TABLE KEY ROW      couple the record to the existing Dataverse row ROW (its id); refused
                            when the row is coupled to another record or the record to a row
  uncouple TABLE KEY        remove the record's link to its row (the row stays in Dataverse)
  sync TABLE KEY            sync now: send the record's newest change again, skipped or not
  restore TABLE KEY         for a record whose Dataverse row was deleted: create the row again
                            and couple it
  delete-coupling TABLE KEY delete the coupling: the record is as if never synced (a row stays)

Each action is audited and needs an operator token. DVSYNC_SERVER and DVSYNC_TOKEN say where the
API is and who you are.
`

func runCouplings(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("couplings couple|uncouple|sync|restore|delete-coupling TABLE KEY; see dvsync couplings -h")}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, couplingsUsage)
		return nil
	}
	var action domain.CouplingAction
	for _, a := range domain.CouplingActions {
		if a.Command == args[0] {
			action = a
		}
	}
	if action.Command == "" {
		return usageError{fmt.Errorf("unknown couplings command %q: couple, uncouple, sync, restore or delete-coupling", args[0])}
	}
	synopsis := "couplings " + action.Command + " TABLE KEY"
	if action == domain.ActionCouple {
		synopsis += " ROW"
	}
	fs, c, asJSON := cliFlags("couplings "+action.Command, synopsis+" [flags]", stderr)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	want := 2
	if action == domain.ActionCouple {
		want = 3
	}
	if fs.NArg() != want {
		return usageError{fmt.Errorf("dvsync %s: needs %d arguments, got %d", synopsis, want, fs.NArg())}
	}
	table, key := fs.Arg(0), fs.Arg(1)
	path := "/api/v1/couplings/" + url.PathEscape(table) + "/" + url.PathEscape(key)
	method, body := http.MethodPost, any(nil)
	switch action {
	case domain.ActionCouple:
		path += "/couple"
		body = map[string]string{"row_id": fs.Arg(2)}
	case domain.ActionDeleteCoupling:
		method = http.MethodDelete
	default:
		path += "/" + action.Command
	}
	var raw json.RawMessage
	if _, err := c.call(ctx, method, path, body, &raw); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, raw)
	}
	var res coupling.Result
	if err := json.Unmarshal(raw, &res); err != nil {
		return err
	}
	fmt.Fprintln(stdout, termSafe(strings.TrimSpace(res.Message)))
	return nil
}
