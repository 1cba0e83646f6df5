// Package domain holds dvsync's concepts: change events, mappings, couplings, sync outcomes and
// failures with the class and kind that say who can fix them. It declares the ports it needs
// (CouplingStore, Dataverse) and imports no broker, database or HTTP package.
package domain
