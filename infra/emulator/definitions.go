package emulator

// AttrType is a Dataverse attribute type, as AttributeTypeName in the metadata.
type AttrType string

const (
	String   AttrType = "String"
	Memo     AttrType = "Memo"
	Integer  AttrType = "Integer"
	Decimal  AttrType = "Decimal"
	Money    AttrType = "Money"
	Boolean  AttrType = "Boolean"
	Picklist AttrType = "Picklist"
	State    AttrType = "State"
	Status   AttrType = "Status"
	Lookup   AttrType = "Lookup"
	UniqueID AttrType = "Uniqueidentifier"
	DateTime AttrType = "DateTime"
)

// Attribute is one column of an entity.
type Attribute struct {
	Name      string
	Type      AttrType
	MaxLength int      // strings
	Options   []int    // picklists
	Targets   []string // lookups: target entity logical names
}

// Navigation is a single-valued navigation property: the name written as "<name>@odata.bind".
type Navigation struct {
	Name      string // e.g. parentcustomerid_account
	Attribute string // the lookup attribute it sets, e.g. parentcustomerid
	Target    string // target entity logical name
}

// Entity is the metadata of one table.
type Entity struct {
	LogicalName   string
	SchemaName    string // used in privilege names: prvCreate<SchemaName>
	LocalizedName string
	EntitySet     string
	PrimaryID     string
	PrimaryName   string
	TypeCode      int // ObjectTypeCode, shown in privilege errors as OTC
	Attributes    map[string]Attribute
	Navigations   map[string]Navigation
	AlternateKeys [][]string
	// DuplicateRules are the attribute sets whose equal values make two rows duplicates when a
	// request turns duplicate detection on (Dataverse's published default rules).
	DuplicateRules [][]string
}

func entity(logical, schema, localized, set, primaryID, primaryName string, otc int, attrs []Attribute, keys ...[]string) *Entity {
	e := &Entity{LogicalName: logical, SchemaName: schema, LocalizedName: localized, EntitySet: set, PrimaryID: primaryID,
		PrimaryName: primaryName, TypeCode: otc, Attributes: map[string]Attribute{}, Navigations: map[string]Navigation{}, AlternateKeys: keys}
	common := []Attribute{
		{Name: primaryID, Type: UniqueID},
		{Name: "statecode", Type: State, Options: []int{0, 1}},
		{Name: "statuscode", Type: Status, Options: []int{1, 2}},
		{Name: "createdon", Type: DateTime},
		{Name: "modifiedon", Type: DateTime},
		{Name: "versionnumber", Type: Integer},
	}
	for _, a := range append(common, attrs...) {
		e.Attributes[a.Name] = a
		if a.Type == Lookup {
			for _, t := range a.Targets {
				nav := a.Name
				if len(a.Targets) > 1 { // polymorphic lookups have one navigation property per target
					nav = a.Name + "_" + t
				}
				e.Navigations[nav] = Navigation{Name: nav, Attribute: a.Name, Target: t}
			}
		}
	}
	return e
}

func str(name string, max int) Attribute { return Attribute{Name: name, Type: String, MaxLength: max} }
func lookup(name string, targets ...string) Attribute {
	return Attribute{Name: name, Type: Lookup, Targets: targets}
}

// DefaultEntities are the tables dvsync maps, with the attributes, lengths and lookups Dataverse
// defines for them.
func DefaultEntities() []*Entity {
	return []*Entity{
		entity("transactioncurrency", "TransactionCurrency", "Currency", "transactioncurrencies", "transactioncurrencyid", "currencyname", 9105, []Attribute{
			str("isocurrencycode", 5), str("currencyname", 100), str("currencysymbol", 10),
			{Name: "exchangerate", Type: Decimal}, {Name: "currencyprecision", Type: Integer},
		}, []string{"isocurrencycode"}),
		entity("account", "Account", "Account", "accounts", "accountid", "name", 1, []Attribute{
			str("name", 160), str("accountnumber", 20), str("address1_line1", 250), str("address1_line2", 250),
			str("address1_city", 80), str("address1_stateorprovince", 50), str("address1_postalcode", 20),
			str("address1_country", 80), str("telephone1", 50), str("emailaddress1", 100), str("websiteurl", 200),
			str("address1_primarycontactname", 100), str("fax", 50),
			{Name: "creditlimit", Type: Money},
			{Name: "customertypecode", Type: Picklist, Options: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
			{Name: "paymenttermscode", Type: Picklist, Options: []int{1, 2, 3, 4}},
			lookup("transactioncurrencyid", "transactioncurrency"),
			lookup("primarycontactid", "contact"),
			lookup("parentaccountid", "account"),
		}, []string{"accountnumber"}).withDuplicateRules([]string{"name"}),
		entity("contact", "Contact", "Contact", "contacts", "contactid", "fullname", 2, []Attribute{
			str("firstname", 50), str("middlename", 50), str("lastname", 50), str("fullname", 160), str("jobtitle", 100),
			str("emailaddress1", 100), str("telephone1", 50), str("mobilephone", 50), str("address1_line1", 250),
			str("address1_line2", 250), str("address1_city", 80), str("address1_postalcode", 20),
			str("address1_country", 80), str("websiteurl", 200),
			lookup("parentcustomerid", "account", "contact"),
			lookup("transactioncurrencyid", "transactioncurrency"),
		}).withDuplicateRules([]string{"emailaddress1"}),
		entity("uomschedule", "UoMSchedule", "Unit Group", "uomschedules", "uomscheduleid", "name", 1056, []Attribute{
			str("name", 200), str("baseuomname", 100), {Name: "description", Type: Memo, MaxLength: 2000},
		}, []string{"name"}),
		entity("uom", "UoM", "Unit", "uoms", "uomid", "name", 1055, []Attribute{
			str("name", 100), {Name: "quantity", Type: Decimal}, {Name: "isschedulebaseuom", Type: Boolean},
			lookup("uomscheduleid", "uomschedule"), lookup("baseuom", "uom"),
		}),
		entity("product", "Product", "Product", "products", "productid", "name", 1024, []Attribute{
			str("name", 100), str("productnumber", 100), {Name: "price", Type: Money}, {Name: "standardcost", Type: Money},
			{Name: "currentcost", Type: Money}, {Name: "quantitydecimal", Type: Integer},
			{Name: "producttypecode", Type: Picklist, Options: []int{1, 2, 3, 4}},
			lookup("defaultuomscheduleid", "uomschedule"), lookup("defaultuomid", "uom"),
			lookup("transactioncurrencyid", "transactioncurrency"),
		}, []string{"productnumber"}),
	}
}

func (e *Entity) withDuplicateRules(rules ...[]string) *Entity {
	e.DuplicateRules = rules
	return e
}
