#!/bin/bash
# Sequential measurement runs for issue 16 / 13 (perf helper).
PGP='postgres://postgres@127.0.0.1:55433/test?sslmode=disable'
O=/tmp/perf-final
log() { echo "$(date -u +%T) $* | $(uptime | sed 's/.*load average: //')" >> $O/runs.log; }
# A: SQLite old vs new, 64 clients, 10 and 10,000 accounts, two rounds interleaved
for r in 1 2; do
  for v in base new; do
    log "start A$r $v"
    nice /tmp/perf-$v experiment ledger --out $O/A$r-$v --param clients=64 --param accounts=10,10000 --param duration=5s --param targets=sqlite > $O/A$r-$v.log 2>&1
    log "end A$r $v"
  done
done
# B: PostgreSQL grid with pgbench, old vs new
for v in base new; do
  log "start B $v"
  nice /tmp/perf-$v experiment ledger --out $O/B-$v --db "$PGP" --param clients=1,8,64 --param accounts=10,10000 --param duration=3s --param targets=postgres > $O/B-$v.log 2>&1
  log "end B $v"
done
# C: audit cost, unaudited vs audited interleaved, new code (and old code once)
for r in 1 2; do
  for t in sqlite,postgres audited; do
    log "start C$r $t"
    nice qshield experiment ledger --out $O/C$r-${t%%,*} --db "$PGP" --param clients=64 --param accounts=10000 --param duration=5s --param pgbench-scale=0 --param targets=$t > $O/C$r-${t%%,*}.log 2>&1
    log "end C$r $t"
  done
done
for t in sqlite,postgres audited; do
  log "start Cbase $t"
  nice qshield-previous experiment ledger --out $O/Cbase-${t%%,*} --db "$PGP" --param clients=64 --param accounts=10000 --param duration=5s --param pgbench-scale=0 --param targets=$t > $O/Cbase-${t%%,*}.log 2>&1
  log "end Cbase $t"
done
# D: growth
log "start D sqlite"
timeout 600 nice qshield experiment ledger-growth --out $O/D-sqlite --param targets=sqlite --param accounts=10000,100000,1000000 --param transfers-per-account=1 --param duration=5s --param queries=2000 > $O/D-sqlite.log 2>&1
log "end D sqlite rc=$?"
log "start D postgres"
timeout 600 nice qshield experiment ledger-growth --out $O/D-postgres --db "$PGP" --param targets=postgres --param accounts=10000,100000,1000000 --param transfers-per-account=1 --param duration=5s --param queries=2000 > $O/D-postgres.log 2>&1
log "end D postgres rc=$?"
log "all done"
