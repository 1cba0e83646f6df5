package mappingfile_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/mappingfile"
)

const override = `mappings:
  - table: customer
    entity: account
    entitySet: accounts
    primaryId: accountid
    fields:
      - {source: number, attribute: accountnumber, type: string}
      - {source: displayName, attribute: name, type: string}
    lookups:
      - {source: currencyCode, table: currency, bind: transactioncurrencyid, caption: Currency Code}
    onDelete: delete
`

func TestOverrideReplacesOneTableAndKeepsTheDefaults(t *testing.T) {
	ms, err := mappingfile.Parse("m.yaml", []byte(override))
	if err != nil {
		t.Fatal(err)
	}
	if c := ms["customer"]; len(c.Fields) != 2 || c.OnDelete != domain.DeleteRow || c.OnDestinationDeleted != domain.ConflictReport {
		t.Fatalf("customer = %+v", c)
	}
	if _, ok := ms["item"]; !ok {
		t.Fatal("the item default mapping was dropped")
	}
	if err := ms.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestErrorsNameTheLine(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"bad type", strings.Replace(override, "attribute: name, type: string", "attribute: name, type: text", 1), `m.yaml:8: fields[1].type: "text" is not one of`},
		{"unknown key", strings.Replace(override, "    onDelete: delete", "    onDelet: delete", 1), "m.yaml:11: field onDelet not found in type mapping"},
		{"unmapped dependency", strings.Replace(override, "table: currency", "table: money", 1), `m.yaml:10: lookups[0].table: table "money" has no mapping`},
		{"bad policy", strings.Replace(override, "onDelete: delete", "onDelete: erase", 1), `m.yaml:11: onDelete: "erase"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mappingfile.Parse("m.yaml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadReadsAFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mappings.yaml")
	if err := os.WriteFile(p, []byte(override), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := mappingfile.Load(p); err != nil {
		t.Fatal(err)
	}
	if _, err := mappingfile.Load(p + ".missing"); err == nil {
		t.Fatal("a missing file loaded")
	}
}

func TestMatchBasedCouplingOptions(t *testing.T) {
	const y = `mappings:
  - table: customer
    entity: account
    entitySet: accounts
    primaryId: accountid
    primaryName: name
    createNewIfNoMatch: false
    fields:
      - {source: number, attribute: accountnumber, type: string, match: {priority: 1, caseSensitive: true}}
      - {source: displayName, attribute: name, type: string, match: {}}
      - {source: city, attribute: address1_city, type: string}
`
	ms, err := mappingfile.Parse("m.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	c := ms["customer"]
	g := c.MatchGroups()
	if c.PrimaryName != "name" || !c.Coupling.NoCreate || c.Coupling.NoSync || len(g) != 2 ||
		g[0].Priority != 0 || g[0].Fields[0].Attribute != "name" || g[1].Fields[0].Attribute != "accountnumber" || !g[1].Fields[0].Match.CaseSensitive {
		t.Fatalf("customer = %+v, groups %+v", c, g)
	}
	// A mapping that does not say keeps Business Central's defaults (create, synchronize), and
	// one without match fields does not couple by match.
	if cur := ms["currency"]; cur.Coupling.NoCreate || cur.Coupling.NoSync || len(cur.MatchGroups()) != 1 {
		t.Fatalf("currency default = %+v", cur)
	}
	ms, err = mappingfile.Parse("m.yaml", []byte(override))
	if err != nil || len(ms["customer"].MatchGroups()) != 0 {
		t.Fatalf("override without match fields: %+v, %v", ms["customer"], err)
	}
	if _, err := mappingfile.Parse("m.yaml", []byte(strings.Replace(y, "priority: 1", "priority: -2", 1))); err == nil ||
		!strings.Contains(err.Error(), "m.yaml:9: fields[0].match.priority") {
		t.Fatalf("err = %v; want the negative priority refused at its line", err)
	}
}
