package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// bulk runs CreateMultiple, UpdateMultiple or UpsertMultiple. On standard tables Dataverse runs
// them in one transaction: one bad target fails the call with an ordinary error body that names
// no index, and nothing is written.
func (e *Emulator) bulk(w http.ResponseWriter, r *http.Request, u *user, ent *Entity, action string) *apiError {
	var body struct {
		Targets []map[string]any `json:"Targets"`
	}
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		return errBadRequest("The request body is not valid JSON: " + err.Error())
	}
	switch action {
	case "CreateMultiple", "UpdateMultiple", "UpsertMultiple":
	default:
		return errSegment("Microsoft.Dynamics.CRM." + action)
	}
	if len(body.Targets) == 0 {
		return &apiError{400, "0x80040203", "Invalid argument. The Targets parameter is empty.", "InvalidArgument"}
	}
	w.Header().Set(recordsHeader, strconv.Itoa(len(body.Targets)))
	mark, committed := e.begin(), false
	defer func() { e.end(mark, committed) }()
	ids := make([]string, 0, len(body.Targets))
	seen := map[string]bool{}
	for _, t := range body.Targets {
		if t["@odata.type"] != "Microsoft.Dynamics.CRM."+ent.LogicalName {
			return errBadRequest("An entry without a type name was found, but no expected type was specified. To allow entries without type information, the expected type must also be specified when the model is specified.")
		}
		key, kerr := bulkKey(ent, t)
		if kerr != nil {
			return kerr
		}
		delete(t, "@odata.id")
		wr, err := e.decodeEntry(ent, t)
		if err != nil {
			return err
		}
		id := e.find(ent, key)
		if k := fmt.Sprint(key); action == "UpsertMultiple" && seen[k] {
			// The wording of this answer is not confirmed against Dataverse.
			return &apiError{400, "0x80040203", "Invalid argument. The Targets collection contains duplicate records.", "InvalidArgument"}
		} else {
			seen[k] = true
		}
		create := id == uuid.Nil
		switch {
		case action == "CreateMultiple" && !create:
			return errDuplicateID()
		case action == "UpdateMultiple" && create:
			return &apiError{404, "0x80040217", fmt.Sprintf("%s With Ids = %s Do Not Exist", ent.SchemaName, key.id), "ObjectDoesNotExist"}
		}
		verb, merged := "Write", row{}
		if create {
			verb, id = "Create", key.id
			if id == uuid.Nil {
				id = newRowID()
			}
			for k, v := range key.alt {
				wr.attrs[k] = v
			}
		} else {
			for k, v := range e.rows[ent.LogicalName][id] {
				merged[k] = v
			}
		}
		for k, v := range wr.attrs {
			merged[k] = v
		}
		if err := e.check(u, verb, ent); err != nil {
			return err
		}
		if err := e.validate(r, u, ent, wr, id, merged); err != nil {
			return err
		}
		if create {
			e.insert(ent, id, wr)
		} else {
			e.update(ent, id, e.rows[ent.LogicalName][id], wr)
		}
		ids = append(ids, id.String())
	}
	committed = true
	if action == "CreateMultiple" {
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.context": baseURL(r) + apiPath + "$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse",
			"Ids":            ids,
		})
		return nil
	}
	w.WriteHeader(http.StatusNoContent) // UpdateMultiple and UpsertMultiple return no body
	return nil
}

// bulkKey reads a target's identity: its primary key attribute, or an alternate key in
// "@odata.id": "accounts(accountnumber='X')". A target of CreateMultiple may have neither.
func bulkKey(ent *Entity, t map[string]any) (rowKey, *apiError) {
	if s, ok := t[ent.PrimaryID].(string); ok {
		id, err := uuid.Parse(s)
		if err != nil {
			return rowKey{}, errConvert("Edm.Guid")
		}
		return rowKey{id: id}, nil
	}
	if ref, ok := t["@odata.id"].(string); ok {
		set, rest, _ := strings.Cut(strings.TrimPrefix(ref, "/"), "(")
		if set != ent.EntitySet || !strings.HasSuffix(rest, ")") {
			return rowKey{}, errBadKey(ent)
		}
		return parseKey(ent, strings.TrimSuffix(rest, ")"))
	}
	return rowKey{}, nil
}
