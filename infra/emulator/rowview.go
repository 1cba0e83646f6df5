package emulator

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"

	"github.com/google/uuid"
)

// serveRowView answers GET /main.aspx?etn=<entity logical name>&id=<row id>, the address of a
// row in a Dataverse environment (dvsync's page links rows as …&pagetype=entityrecord): a small
// page of the row's columns. Dataverse asks a person to sign in and opens the row's form; the
// emulator is a dev tool, and shows the row without a token. It only reads.
func (e *Emulator) serveRowView(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	etn, rawID := q.Get("etn"), q.Get("id")
	v := rowView{Entity: etn, ID: rawID}
	e.mu.Lock()
	ent, known := e.entities[etn]
	id, idErr := uuid.Parse(rawID)
	var found bool
	if known && idErr == nil {
		var rw row
		if rw, found = e.rows[ent.LogicalName][id]; found {
			v.Title, v.Columns = ent.LocalizedName, e.columns(ent, rw)
			if name, ok := rw[ent.PrimaryName].(string); ok && name != "" {
				v.Title += ": " + name
			}
		}
	}
	e.mu.Unlock()
	status := http.StatusOK
	switch {
	case etn == "" || !known:
		status, v.Problem = http.StatusNotFound, fmt.Sprintf("This emulator has no table %q (etn). It knows the tables of its definition files.", etn)
	case idErr != nil:
		status, v.Problem = http.StatusBadRequest, fmt.Sprintf("%q (id) is not a row id: a GUID such as 00000000-0000-0000-0000-000000000001.", rawID)
	case !found:
		status, v.Problem = http.StatusNotFound, fmt.Sprintf("There is no %s row %s: it was deleted, or this emulator never had it (it keeps its rows in memory, and starts empty).", etn, id)
	}
	if v.Title == "" {
		v.Title = "Row not found"
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = rowViewPage.Execute(w, v)
}

// rowView is what the row page shows.
type rowView struct {
	Title, Entity, ID, Problem string
	Columns                    []column
}

type column struct {
	Name, Value string
	Link        string // a lookup's row
}

// columns lists a row's columns as the Web API names them, the primary id and name first, the
// others by name; a lookup links to its row. The caller holds e.mu.
func (e *Emulator) columns(ent *Entity, r row) []column {
	var out []column
	for name, v := range r {
		c := column{Name: name, Value: shown(v)}
		if a := ent.Attributes[name]; a.Type == Lookup {
			c.Name = "_" + name + "_value"
			if id, ok := v.(uuid.UUID); ok {
				for _, target := range a.Targets {
					if _, found := e.rows[target][id]; found {
						c.Link = "/main.aspx?" + url.Values{"etn": {target}, "id": {id.String()}, "pagetype": {"entityrecord"}}.Encode()
					}
				}
			}
		}
		out = append(out, c)
	}
	rank := func(c column) int {
		switch c.Name {
		case ent.PrimaryID:
			return 0
		case ent.PrimaryName:
			return 1
		}
		return 2
	}
	sort.Slice(out, func(i, j int) bool {
		if ri, rj := rank(out[i]), rank(out[j]); ri != rj {
			return ri < rj
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// shown is a column's value as text: strings as they are, other values as JSON.
func shown(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case fmt.Stringer:
		return x.String()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

var rowViewPage = template.Must(template.New("row").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · Dataverse emulator</title>
<style>
:root { font-family: system-ui, sans-serif; color: #1b1b1b; background: #fafafa; }
body { margin: 0 auto; padding: 1rem; max-width: 60rem; }
.note { color: #555; font-size: .85rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #ddd; font-size: .9rem; vertical-align: top; }
td { word-break: break-word; white-space: pre-wrap; }
.problem { background: #fdecec; border: 1px solid #c33; padding: .5rem; }
</style>
</head>
<body>
<p class="note">Dataverse emulator (dvsync dev): a row as the Web API holds it. Read-only.</p>
<h1>{{.Title}}</h1>
{{if .Problem}}<p class="problem" role="alert">{{.Problem}}</p>
{{else}}<p class="note">{{.Entity}} {{.ID}}</p>
<table>
<tr><th scope="col">Column</th><th scope="col">Value</th></tr>
{{range .Columns}}<tr><th scope="row">{{.Name}}</th><td>{{if .Link}}<a href="{{.Link}}">{{.Value}}</a>{{else}}{{.Value}}{{end}}</td></tr>
{{end}}</table>{{end}}
</body>
</html>
`))
