//! The phases after the origin answered or failed: the answer's payment (settle, queue or
//! release, and the receipt), the gateway's own error answers, and the end of each request
//! (unanswered claims, metrics, the access line).

use super::*;

impl Gateway {
    /// `fail_to_proxy`, in the request's span.
    pub(super) async fn fail(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (code, name, message) = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(code)) => (*code, "error", "request failed".to_string()),
            (ErrorSource::Downstream, ErrorType::ReadTimedout) => (
                408,
                "request_timeout",
                "the request body was not received in time".to_string(),
            ),
            (
                ErrorSource::Downstream,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => (0, "", String::new()),
            (ErrorSource::Downstream, _) => (400, "bad_request", e.to_string()),
            (ErrorSource::Upstream, _) if ctx.route.is_some() => {
                ctx.facts.upstream = Some(("error", None));
                (
                    502,
                    "bad_gateway",
                    "the upstream could not be reached or failed to answer".to_string(),
                )
            }
            (ErrorSource::Upstream, _) => (
                502,
                "bad_gateway",
                "the upstream could not be reached or failed to answer".to_string(),
            ),
            _ => (500, "internal_error", "the gateway failed".to_string()),
        };
        if code > 0 && session.response_written().is_none() {
            // Money that already moved (`before`) is receipted on every answer, errors included.
            let receipt = ctx.payment.as_ref().and_then(|p| match &p.stage {
                Stage::Settled(s) => Some((p.receipt_header, p.receipt_ok(&s.transaction))),
                _ => None,
            });
            let reply = Reply::error(code, name, message).with_receipt(receipt);
            let live = self.live(ctx);
            if let Err(err) = respond::send(
                session,
                reply,
                &live.settings.cors_allow_origin,
                &ctx.request_id,
            )
            .await
            {
                tracing::debug!("could not write the error response: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// `response_filter`, in the request's span: settle `after` or queue `deferred` when the
    /// origin's status is charged, release when not; the receipt, or a 402 instead of the answer.
    pub(super) async fn answer(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Looked up by `HeaderName`, not by text: no name is parsed for the lookup.
        resp.remove_header(&KEEP_ALIVE);
        resp.remove_header(&PROXY_CONNECTION);
        let status = resp.status.as_u16();
        if pay::is_interim(status) {
            // 100 Continue, 103 Early Hints: not the origin's answer; only the final one decides.
            return Ok(());
        }
        let waited = ctx.upstream_started.map(|t| t.elapsed().as_secs_f64());
        ctx.facts.upstream = Some((super::ctx::status_class(status), waited));
        let live = self.live(ctx);
        let origin = &live.settings.cors_allow_origin;
        if ctx.route.as_ref().is_some_and(|r| !r.is_free()) {
            respond::add_cors(resp, origin)?;
        }
        let Some(state) = ctx.payment.as_mut() else {
            return Ok(());
        };
        let charged = ctx
            .route
            .as_ref()
            .is_some_and(|r| pay::is_charged(&r.config, status));
        let outcome = match (&state.stage, state.policy) {
            (Stage::Settled(s), _) => SettleOutcome::Settled(state.receipt_ok(&s.transaction)),
            (Stage::Claimed, _) if !charged => {
                // A status the route does not charge for (4xx, 5xx by default): pass it through,
                // charge nothing, and give the proof back for a retry.
                let why = format!("origin answered {status}");
                Box::pin(pay::release(&self.payments, state, &why)).await;
                return Ok(());
            }
            // The payment's futures are boxed: large, and inline they would make every response's
            // `response_filter` future, a free one's too, that much larger to allocate and move.
            (Stage::Claimed, SettlePolicy::Deferred) => {
                let outcome = Box::pin(pay::enqueue_detached(&self.payments, state)).await;
                let label = if matches!(outcome, SettleOutcome::Settled(_)) {
                    "queued"
                } else {
                    outcome.label()
                };
                ctx.facts.settlement = Some((label, None));
                outcome
            }
            (Stage::Claimed, _) => {
                let started = std::time::Instant::now();
                let outcome = Box::pin(pay::settle_detached(&self.payments, state)).await;
                ctx.facts.settlement =
                    Some((outcome.label(), Some(started.elapsed().as_secs_f64())));
                outcome
            }
            _ => return Ok(()),
        };
        let offers = ctx.route.as_ref().and_then(|r| r.offers.as_ref());
        match decide::settled(outcome, offers, &ctx.resource_url, state.receipt_header) {
            Ok((name, receipt)) => {
                resp.insert_header(name, x402::encode_header(&receipt))?;
            }
            Err(reply) => {
                // None of the origin's answer goes out: the client did not pay for it.
                let (header, body) = respond::render(reply, origin, &ctx.request_id)?;
                *resp = header;
                ctx.replacement_body = Some(body);
            }
        }
        Ok(())
    }

    /// A claim its request left unanswered: charged when the origin had the request (it may
    /// have acted on it), else released.
    async fn unanswered(&self, e: Option<&Error>, ctx: &mut RequestCtx) {
        let Some(state) = ctx.payment.as_mut() else {
            return;
        };
        let client_left = e.is_some_and(|e| e.esource() == &ErrorSource::Downstream);
        match pay::unanswered(ctx.forwarded, client_left) {
            pay::Unanswered::Charge => {
                // The origin has the request and may act on it; releasing here would let one
                // proof run it again and again by hanging up each time.
                let outcome = if state.policy == SettlePolicy::Deferred {
                    pay::enqueue_detached(&self.payments, state).await
                } else {
                    pay::settle_detached(&self.payments, state).await
                };
                ctx.facts.settlement = Some((outcome.label(), None));
            }
            pay::Unanswered::Release => {
                pay::release(&self.payments, state, "the origin never answered").await
            }
        }
    }

    /// `logging`, in the request's span: an unanswered claim is charged or released, then the
    /// request's metrics.
    pub(super) async fn finish(&self, e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx
            .payment
            .as_ref()
            .is_some_and(|state| state.stage == Stage::Claimed)
        {
            // Boxed: rare, and its settlement's future is large; inline, every request's last
            // phase (a free one's too) would move room for it into place.
            Box::pin(self.unanswered(e, ctx)).await;
        }
        let m = &self.metrics;
        let f = &ctx.facts;
        if let (Some((status, waited)), Some(route)) = (f.upstream, &ctx.route) {
            m.ops
                .upstream_responses
                .with_label_values(&[&route.label, status])
                .inc();
            if let Some(secs) = waited {
                m.ops
                    .upstream_seconds
                    .with_label_values(&[&route.label])
                    .observe(secs);
            }
        }
        if f.challenged {
            m.challenges.inc();
        }
        if let Some(a) = f.attempt {
            m.attempts.with_label_values(&[a]).inc();
        }
        if let Some(r) = f.refusal {
            m.tenant_refusals.with_label_values(&[r]).inc();
        }
        if let Some((network, secs)) = &f.verification {
            m.verification_seconds
                .with_label_values(&[network])
                .observe(*secs);
        }
        if let Some(state) = &ctx.payment {
            m.verified
                .with_label_values(&[&state.tenant, &state.network])
                .inc();
            let policy = match state.policy {
                SettlePolicy::Before => "before",
                SettlePolicy::After => "after",
                SettlePolicy::Deferred => "deferred",
            };
            let outcome = match (&state.stage, f.settlement) {
                (Stage::Released, _) => Some("released"),
                (_, Some((label, _))) => Some(label),
                _ => None,
            };
            if let Some(outcome) = outcome {
                m.settlements
                    .with_label_values(&[&state.network, policy, outcome])
                    .inc();
            }
            if let Some((_, Some(secs))) = f.settlement {
                m.settlement_seconds
                    .with_label_values(&[&state.network])
                    .observe(secs);
            }
        }
        // Counted last: a scrape that sees the request counted sees every other fact of it
        // (a test waiting for the count read the attempt's counter one increment early).
        if !f.route.is_empty() {
            m.requests.with_label_values(&[f.route]).inc();
        }
    }
}

/// Hop-by-hop answer headers an origin may send, never passed on to the client.
static KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: http::HeaderName = http::HeaderName::from_static("proxy-connection");

/// What the access line says about the request and its answer, besides what `RequestCtx` holds.
pub(super) struct Access<'a> {
    pub method: &'a str,
    /// The path as the client sent it, without its query.
    pub path: &'a str,
    pub client: Option<std::net::IpAddr>,
    /// The status of the answer written, if one was.
    pub status: Option<u16>,
}

impl<'a> Access<'a> {
    /// The facts of a request pingora's session served.
    pub(super) fn of(session: &'a Session) -> Self {
        let req = session.req_header();
        Access {
            method: req.method.as_str(),
            path: req.uri.path(),
            client: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            status: session.response_written().map(|h| h.status.as_u16()),
        }
    }
}

/// The one access-log line of a request, written last. The path is the normalized one without
/// its query (which can carry secrets); no header but the request id (in the span) is logged.
pub(super) fn access_line(req: &Access<'_>, e: Option<&Error>, ctx: &RequestCtx) {
    // The line's fields are made (an address and a pattern formatted) only for a line written.
    // Asked as the event below, with its field names: a filter may name fields
    // (`x402_gate[{payer}]=off`), and a question without them could be answered otherwise.
    let enabled = tracing::event_enabled!(
        target: "x402_gate::access",
        tracing::Level::INFO,
        method,
        path,
        route,
        kind,
        tenant,
        status,
        payment,
        refusal,
        settlement,
        network,
        total_ms,
        verify_ms,
        settle_ms,
        client,
        error,
        message
    );
    if !enabled {
        return;
    }
    let path = ctx.rewritten_path.as_deref().unwrap_or(req.path);
    let route = ctx.route.as_ref().map(|r| match &r.config.path {
        PathPattern::Exact(p) => p.clone(),
        PathPattern::Prefix(p) => format!("{}/*", p.trim_end_matches('/')),
    });
    let f = &ctx.facts;
    let payment = f
        .attempt
        .or(f.challenged.then_some("challenged"))
        .or(f.refusal);
    let settlement = match (&ctx.payment, f.settlement) {
        (Some(p), _) if p.stage == Stage::Released => Some("released"),
        (_, Some((label, _))) => Some(label),
        _ => None,
    };
    let network = ctx
        .payment
        .as_ref()
        .map(|p| p.network.as_str())
        .or(f.verification.as_ref().map(|(n, _)| n.as_str()));
    let ms = |secs: f64| (secs * 1e6).round() / 1e3;
    let total_ms = ctx.started.map(|t| ms(t.elapsed().as_secs_f64()));
    let client = req.client.map(|ip| ip.to_string());
    tracing::info!(
        target: "x402_gate::access",
        method = req.method,
        path = truncated(path, 256),
        route = route.as_deref(),
        kind = f.route,
        tenant = ctx.route.as_ref().map(|r| r.config.tenant.as_str()),
        status = req.status,
        payment,
        refusal = f.refusal,
        settlement,
        network,
        total_ms,
        verify_ms = f.verification.as_ref().map(|(_, s)| ms(*s)),
        settle_ms = f.settlement.and_then(|(_, s)| s).map(ms),
        client = client.as_deref(),
        error = e.map(|e| e.etype().as_str()),
        "request"
    );
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub(super) fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
