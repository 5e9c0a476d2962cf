package qmsp

import (
	"context"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/sqldb"
)

// MasterKeys is the CSS's view of its key manager (ETSI 014 enc_keys as the
// master SAE). *etsi014.Client implements it.
type MasterKeys interface {
	EncKeys(ctx context.Context, slaveSAE string, number, sizeBits int) ([]etsi014.KeyMaterial, error)
}

// SlaveKeys is the PPS's view of its key manager (ETSI 014 dec_keys as the
// slave SAE). *etsi014.Client implements it.
type SlaveKeys interface {
	DecKeys(ctx context.Context, masterSAE string, keyIDs ...string) ([]etsi014.KeyMaterial, error)
}

// schema holds the CSS's and the PPS's tables (PostgreSQL types; see
// sqldb.Migration).
const schema = `CREATE TABLE qmsp_css_gateways (
		gi TEXT PRIMARY KEY,
		merchant BIGINT NOT NULL,
		status TEXT NOT NULL,
		epoch BIGINT NOT NULL,
		pk BYTEA NOT NULL,
		pending_epoch BIGINT NOT NULL DEFAULT 0,
		pending_pk BYTEA,
		resyncs BIGINT NOT NULL DEFAULT 0,
		updated_at BIGINT NOT NULL);
	CREATE TABLE qmsp_pps_gateways (
		gi TEXT PRIMARY KEY,
		merchant BIGINT NOT NULL,
		merchant_account TEXT NOT NULL,
		public_key BYTEA NOT NULL,
		status TEXT NOT NULL,
		created_at BIGINT NOT NULL);
	CREATE TABLE qmsp_pps_payers (
		payer BIGINT PRIMARY KEY,
		account TEXT NOT NULL,
		phone TEXT NOT NULL);
	CREATE TABLE qmsp_pps_keys (
		key_id TEXT PRIMARY KEY,
		material BYTEA NOT NULL,
		units INTEGER NOT NULL,
		fetched_at BIGINT NOT NULL);
	CREATE TABLE qmsp_payments (
		key_id TEXT NOT NULL,
		unit INTEGER NOT NULL,
		gi TEXT NOT NULL,
		payer BIGINT NOT NULL,
		amount BIGINT NOT NULL,
		currency TEXT NOT NULL,
		state TEXT NOT NULL,
		transfer_id TEXT NOT NULL DEFAULT '',
		reason TEXT NOT NULL DEFAULT '',
		request_hash BYTEA NOT NULL,
		created_at BIGINT NOT NULL,
		PRIMARY KEY (key_id, unit))`

// schemaNodes moves what a node kept in memory into the database, so that
// N nodes on one database are one platform: the gateways the platform runs
// itself (GatewaySessions; state and device key sealed) and the CSS's
// prefetched quantum key batches (sealed; claimed in the transaction that
// delivers them, so each is delivered once, and a node that dies leaves its
// prefetched batches to the others).
const schemaNodes = `CREATE TABLE qmsp_gateway_sessions (
		gi TEXT PRIMARY KEY,
		merchant BIGINT NOT NULL,
		state BYTEA NOT NULL,
		device_key BYTEA NOT NULL,
		certificate BYTEA NOT NULL,
		updated_at BIGINT NOT NULL);
	CREATE TABLE qmsp_css_prefetch (
		key_id TEXT PRIMARY KEY,
		bytes INTEGER NOT NULL,
		material BYTEA NOT NULL,
		fetched_at BIGINT NOT NULL);
	CREATE INDEX qmsp_css_prefetch_order ON qmsp_css_prefetch (bytes, fetched_at)`

var migrations = []sqldb.Migration{{Version: 1, SQL: schema}, {Version: 2, SQL: schemaNodes}}

func migrate(ctx context.Context, db *sqldb.DB) error {
	return db.Migrate(ctx, "qmsp", migrations)
}

func nowOr(f func() time.Time) func() time.Time {
	if f != nil {
		return f
	}
	return time.Now
}

func audited(ctx context.Context, a audit.Recorder, actor, event, outcome, resource string, details map[string]string) {
	if a == nil {
		return
	}
	_ = a.Record(ctx, audit.Entry{Actor: actor, Event: event, Outcome: outcome, Origin: "qmsp", Resource: resource, Details: details})
}
