package domain

// KnownTables are the tables the event contract names. An event of another table is invalid; an
// event of a known table without a mapping is a setup error (mapping_missing).
var KnownTables = []string{
	"currency", "salesperson", "customer", "vendor", "contact",
	"unitOfMeasure", "item", "paymentTerms", "shipmentMethod",
}

// IsKnownTable reports whether the event contract names the table.
func IsKnownTable(table string) bool {
	for _, t := range KnownTables {
		if t == table {
			return true
		}
	}
	return false
}

func str(source, attribute string) FieldMapping {
	return FieldMapping{Source: source, Attribute: attribute, Type: TypeString}
}

// matched makes a field the first (and only) match criterion of its mapping.
func matched(f FieldMapping) FieldMapping {
	f.Match = &FieldMatch{}
	return f
}

func num(source, attribute string) FieldMapping {
	return FieldMapping{Source: source, Attribute: attribute, Type: TypeNumber}
}

// DefaultMappings are Business Central's default table mappings to Dataverse (CDS Setup Defaults
// and CRM Setup Defaults), with source fields named as in Business Central's API v2.0.
//
// Match-based coupling: currency matches isocurrencycode and creates a currency when none
// matches, as Business Central's default does (so an environment's base currency is coupled, not
// created twice). Business Central matches no other table by default; dvsync also matches an
// account by its accountnumber and a product by its productnumber, numbers people keep unique,
// so that accounts and products already in Dataverse are coupled instead of duplicated.
func DefaultMappings() Mappings {
	ms := []Mapping{
		{
			// CURRENCY: Code -> isocurrencycode, Symbol -> currencysymbol, Description -> currencyname.
			Table: "currency", Entity: "transactioncurrency", EntitySet: "transactioncurrencies", PrimaryID: "transactioncurrencyid",
			PrimaryName: "currencyname",
			Fields: []FieldMapping{
				matched(str("code", "isocurrencycode")),
				str("displayName", "currencyname"),
				str("symbol", "currencysymbol"),
				num("exchangeRate", "exchangerate"),
			},
			OnDelete: DeleteDeactivate, OnDestinationDeleted: ConflictReport,
		},
		{
			// CUSTOMER: bidirectional in Business Central; dvsync writes the To-Dataverse half.
			// customertypecode 3 (Customer) is what Business Central's BCICUSTOME template sets.
			Table: "customer", Entity: "account", EntitySet: "accounts", PrimaryID: "accountid", PrimaryName: "name",
			Fields: []FieldMapping{
				matched(str("number", "accountnumber")),
				str("displayName", "name"),
				str("addressLine1", "address1_line1"),
				str("addressLine2", "address1_line2"),
				str("city", "address1_city"),
				str("state", "address1_stateorprovince"),
				str("postalCode", "address1_postalcode"),
				str("country", "address1_country"),
				str("phoneNumber", "telephone1"),
				str("email", "emailaddress1"),
				str("website", "websiteurl"),
				num("creditLimit", "creditlimit"),
			},
			Lookups: []Lookup{
				{Source: "currencyCode", Table: "currency", Bind: "transactioncurrencyid", Caption: "Currency Code"},
			},
			Constants: map[string]any{"customertypecode": 3},
			OnDelete:  DeleteDeactivate, OnDestinationDeleted: ConflictReport,
		},
		{
			// CONTACT: persons of a company; the parent company is the account coupled to the
			// customer named by companyNumber.
			Table: "contact", Entity: "contact", EntitySet: "contacts", PrimaryID: "contactid", PrimaryName: "fullname",
			Fields: []FieldMapping{
				str("firstName", "firstname"),
				str("middleName", "middlename"),
				str("surname", "lastname"),
				str("jobTitle", "jobtitle"),
				str("email", "emailaddress1"),
				str("phoneNumber", "telephone1"),
				str("mobilePhoneNumber", "mobilephone"),
				str("addressLine1", "address1_line1"),
				str("addressLine2", "address1_line2"),
				str("city", "address1_city"),
				str("postalCode", "address1_postalcode"),
				str("country", "address1_country"),
				str("website", "websiteurl"),
			},
			Lookups: []Lookup{
				{Source: "companyNumber", Table: "customer", Bind: "parentcustomerid_account", Caption: "Company No."},
				{Source: "currencyCode", Table: "currency", Bind: "transactioncurrencyid", Caption: "Currency Code"},
			},
			OnDelete: DeleteDeactivate, OnDestinationDeleted: ConflictReport,
		},
		{
			// UNIT OF MEASURE -> uomschedule (unit group), one unit per group named after the code.
			Table: "unitOfMeasure", Entity: "uomschedule", EntitySet: "uomschedules", PrimaryID: "uomscheduleid", PrimaryName: "name",
			Fields: []FieldMapping{
				str("code", "name"),
				str("code", "baseuomname"),
				str("displayName", "description"),
			},
			OnDelete: DeleteReport, OnDestinationDeleted: ConflictReport,
		},
		{
			// ITEM-PRODUCT: the unit group is the coupled uomschedule, the default unit its base unit.
			Table: "item", Entity: "product", EntitySet: "products", PrimaryID: "productid", PrimaryName: "name",
			Fields: []FieldMapping{
				matched(str("number", "productnumber")),
				str("displayName", "name"),
				num("unitPrice", "price"),
				num("unitCost", "standardcost"),
			},
			Lookups: []Lookup{
				{Source: "baseUnitOfMeasureCode", Table: "unitOfMeasure", Bind: "defaultuomscheduleid", Caption: "Base Unit of Measure"},
				{Source: "baseUnitOfMeasureCode", Table: "unitOfMeasure", Bind: "defaultuomid", Caption: "Base Unit of Measure",
					Query: &LookupQuery{EntitySet: "uoms", IDAttribute: "uomid", Filter: "_uomscheduleid_value eq {rowId} and isschedulebaseuom eq true"}},
			},
			Constants: map[string]any{"producttypecode": 1, "quantitydecimal": 0},
			OnDelete:  DeleteDeactivate, OnDestinationDeleted: ConflictReport,
		},
	}
	out := Mappings{}
	for _, m := range ms {
		out[m.Table] = m
	}
	return out
}
