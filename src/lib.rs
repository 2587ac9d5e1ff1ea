//! x402-gate: a drop-in reverse proxy, built on pingora, that charges per request with the x402
//! protocol (HTTP 402 Payment Required) in stablecoins.
//!
//! An unpaid request to a priced route gets a 402 challenge (the v2 `PAYMENT-REQUIRED` header and
//! the v1 JSON body). A paid retry is matched against the route's own requirements, verified
//! by the network's chain backend (EVM `exact`/EIP-3009: locally, then one `eth_call`), claimed
//! exactly once in the store, and settled on-chain before, after or deferred from the origin's
//! answer, with a `PAYMENT-RESPONSE` receipt. Free routes are proxied untouched.
//!
//! # Layout
//!
//! ```text
//! main.rs      thin synchronous main: parse the CLI, load the config, run
//! cli.rs       clap command line (--config, --check, --log-format, --version with the build,
//!              pingora process flags)
//! logging/     mod.rs (the tracing subscriber: text or JSON, RUST_LOG; request ids and their
//!              span; the access-log target), batch.rs (the thread that writes lines in batches),
//!              access.rs (the access line's text, written directly), timestamp.rs (its time)
//! app.rs       the one wiring module: Config -> RouteTable -> pingora Server and services;
//!              the swappable state a reload replaces (config, route table, ProxyLive, limiters)
//! config/      raw.rs (serde mirror of the TOML), env.rs (${VAR} expansion),
//!              validate/ (raw -> typed Config, every error with its key path: mod.rs,
//!              networks.rs, routes.rs, limits.rs), tests.rs
//! x402/        PURE wire protocol: v1/v2 types, base64 header codec, CAIP-2 networks,
//!              atomic amounts, wire reason codes; redact.rs: error texts scrubbed of URLs and
//!              keys before they are stored, logged or shown
//! routes/      route table: (host, method, normalized path) -> route; path normalization;
//!              each route's label for metrics; rebuilds carry superseded offers over
//! pricing/     price -> byte-stable PaymentRequirements per route; challenges; proof matching
//!              (and quotes from before a price change, honoured for their timeout)
//! proxy/       impl ProxyHttp, an adapter over payments: decide.rs (request facts -> the next
//!              step or a Reply, as plain functions), gate.rs (request-line, upgrade and payment
//!              header checks), respond.rs (the one renderer of Replies: 402/4xx/5xx, receipts,
//!              CORS), admit.rs (request_filter's steps), forward.rs (peer, upstream headers),
//!              phases.rs (answer, failure, end of request, metrics), ctx.rs (per-request
//!              state, the request's ProxyLive snapshot), limit.rs (invalid payments per IP),
//!              idle.rs (pingora's connection loop, in a task of its own per connection, with
//!              idle keep-alive connections waiting for their next request holding only their
//!              socket), write_buffer.rs (a TCP connection's write buffer, held only while a
//!              response is written), quick.rs (an unpaid request for a priced route answered
//!              from its head alone, without pingora's session, as pingora's path answers it)
//! payments/    the transport-free payment core: present.rs (the payment header decoded and
//!              matched), admit.rs (verify via the cache, atomic claim for a payee with the quota
//!              count, overdraw guard), settle.rs (settle, enqueue, release), batch.rs
//!              (group commit: payments waiting for a settlement slot go out as one batch),
//!              landing.rs (a recorded settlement sent and waited for; one stuck unmined
//!              replaced at higher fees, the replacement recorded first), queued.rs (deferred attempts, alone or batched), verify_only.rs (verify API,
//!              transfer lookup),
//!              rules.rs (what is charged), state.rs (typed stages and receipts)
//!   chain.rs   trait ChainBackend and its chain-neutral value types: PaymentKey, Verified with
//!              an opaque, chain-tagged, versioned SchemePayload; ChainBackends by network
//!   evm/       the EVM backend (EIP-3009 verification and settlement on alloy): verify.rs
//!              (local checks, diagnosis), simulate.rs (simulations, those that wait made
//!              together in one Multicall3 eth_call), nonce.rs (settler nonces), send.rs
//!              (sending, what a node's answer means), receipt.rs (lookups, the receipt wait
//!              over a settlement and what it replaced, confirmations), replace.rs (a stuck settlement signed again at its nonce, higher fees), batch.rs (Multicall3 batches, each payment
//!              judged by its own AuthorizationUsed); payload.rs: EvmAuthorization <-> SchemePayload;
//!              observe.rs: a tower layer timing every RPC call for an RpcObserver (metrics);
//!              domain.rs: EIP-712 signing hashes, each token's domain separator kept
//!   svm/       the Solana backend (the `exact` SVM scheme on the agave 3.1 client crates):
//!              verify.rs (every local check, pure), send.rs (co-signed send, confirmation to
//!              the commitment, lookups), payload.rs (the stored form), client.rs (a paying
//!              client's transaction, for tests and benchmarks), tests.rs
//!   lanes.rs   several settler keys of one network behind one backend, per held lease
//!   fake.rs    a scripted backend for the core's unit tests (tests.rs)
//! store/       sqlx over SQLite or Postgres: types and connecting (mod.rs), consume-once claims
//!              and their lifecycle (claims.rs), writer.rs (SQLite's one writer, a thread running
//!              SQLite in-process with rusqlite: a payment's writes, those waiting together in
//!              one commit; round.rs writes one such round), durability.rs (which commits may
//!              skip their fsync), ledger.rs, queue.rs (queue_format.rs: its versioned stored
//!              format), leases.rs, tenants.rs, routes.rs (routes and namespaces written through
//!              the management API), billing.rs (Stripe events once and in order, x402-paid
//!              periods); LazyStore opens a pool in the runtime that uses it
//! settle/      background services: worker.rs (deferred settlements, one attempt each via
//!              payments), reconcile.rs (records settlements whose outcome was never seen, re-sends
//!              dropped ones), leases.rs (settler-key and queue leases)
//! cache/       moka cache of verification outcomes (never the authority on replay); concurrent
//!              presentations of one proof share one verification
//! tenants/     tenant standing (status, tier, monthly usage) cached briefly; API keys: minting,
//!              hashing, scoped authentication; constant-time admin credential check
//! admin/       management API (axum) on admin_listen: extract.rs (operator/API-key auth, or a
//!              dashboard session with its CSRF token, and bodies as extractors), handlers by
//!              resource (tenants, keys, payments, verify, usage, status, reload, billing,
//!              api_routes), types.rs
//!              (bodies, OpenAPI schemas); dashboard/ (the embedded single-page dashboard at
//!              /dashboard: assets.rs serves dashboard/dist as build.rs embedded it, session.rs
//!              the server-side sign-in sessions); a pingora background service
//! billing/     plan billing: stripe.rs (Stripe-Signature verification and each event's meaning
//!              for a tenant's plan, as plain functions; Checkout sessions over reqwest), plans.rs
//!              (tiers sold for x402, priced by `pricing` like routes)
//! ratelimit.rs request rates per client IP and per tenant (proxy and admin): governor in
//!              process, or GCRA in one Lua script on a shared Redis, falling back to local
//! metrics/     Prometheus registry, on metrics_listen: mod.rs (the payment funnel, health and
//!              rate-limit series), ops.rs (RPC calls, verification cache, origins by route,
//!              deferred queue, settler lanes, config reloads, build info; the RpcObserver)
//! reload/      config reload (SIGHUP, POST /api/v1/x402/admin/reload): plan.rs (running config
//!              + file -> what changes live, what waits for a restart, as a plain function),
//!              mod.rs (validate, write tenants, swap; ReloadService runs them one at a time)
//! health.rs    background probe of every network's RPC and settler gas balances
//!              (ChainBackend::probe) onto a HealthBoard that admin's /ready judges; publishes
//!              the settler gauges (balances, floors, lanes held, next nonces)
//! routes/reload.rs  rebuilds the route table when tenants' tiers or pay_to change, or the
//!              config is reloaded (one lock for every rebuild); writes the file's tenants
//! tls/         TLS at the edge: certs.rs (PEM files -> a checked rustls key pair, the resolver
//!              every handshake asks), mod.rs (pingora listener settings with ALPN h2/http1.1,
//!              the reloader service: SIGHUP and content changes)
//! reporting.rs Sentry: panics and error-level events, scrubbed of every configured secret and
//!              of anything URL- or key-shaped before they leave; its tracing layer
//! net.rs       SO_REUSEPORT listeners for the management API and metrics, so the new process
//!              of a graceful upgrade binds them while the old one drains
//! proxy/drain.rs  `Connection: close` on every answer once a graceful upgrade or termination
//!              began
//! ```
//!
//! # Dependency rules
//!
//! ```text
//! main -> logging, reporting, app -> { proxy, admin, settle::{worker, reconcile, leases},
//!                           routes::reload, health, metrics, reload, tls }
//! reload -> config, routes (reload), tenants, proxy (ProxyLive), ratelimit, health, store,
//!           metrics, x402
//! proxy -> payments, routes, pricing, tenants, metrics, ratelimit, logging, config, x402   (never
//!          store or a backend)
//! admin -> payments, store, tenants, pricing, billing, routes (reload, api, upstream), reload
//!          (handle, report), health, ratelimit, logging, config, x402 (never proxy)
//! billing -> pricing, store (value types), config, x402
//! ratelimit -> config, metrics
//! health -> payments::chain, config, metrics
//! tls -> config (config -> tls::certs, to check the files at --check); reporting -> config, cli,
//!        x402; logging -> reporting (its layer); admin, metrics -> net
//! logging -> config
//! settle -> payments, store, metrics
//! payments (core) -> payments::chain, store, cache, tenants, routes, pricing, config, x402
//! payments::{chain, lanes, evm} -> pricing, config, x402   (never store, cache, proxy, admin)
//! store -> payments::chain (value types only), x402
//! cache -> payments::chain, pricing, metrics      metrics -> payments::chain (RpcObserver)
//! tenants -> store, config      routes -> pricing -> config -> x402; routes::reload -> store
//! x402 imports nothing internal
//! pingora stays in app, proxy and the background services; alloy in payments::evm only; the solana
//! crates in payments::svm only; reqwest in billing::stripe; sqlx in
//! store; moka in cache, tenants and proxy::limit; axum in admin and metrics; prometheus in
//! metrics; governor in proxy::limit and ratelimit; redis in ratelimit; tracing-subscriber in
//! logging and reporting; sentry in reporting (and config, to parse a DSN); rustls in tls; tower
//! (the Layer/Service traits) in payments::evm. config checks EIP-55 checksums with sha3's
//! keccak, not with alloy.
//! ```

pub mod admin;
pub mod app;
pub mod billing;
pub mod cache;
pub mod cli;
pub mod config;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod payments;
pub mod pricing;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod reporting;
pub mod routes;
pub mod settle;
pub mod store;
pub mod tenants;
pub mod tls;
pub mod x402;
