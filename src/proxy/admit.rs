//! `request_filter`'s work: the request's decisions (`decide.rs`) in order, from the request line
//! to an admitted (and, under `before`, settled) payment, or the reply that ends the request.

use super::*;

impl Gateway {
    /// `request_filter` as a sequence of decisions (`decide.rs`): each step either hands on to the
    /// next or ends the request with the reply the caller renders. `Ok` forwards the request, with
    /// its payment admitted (and settled, under `before`) in `ctx`.
    pub(super) async fn admit_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), Reply> {
        ctx.facts.route = "rejected";
        let live = self.live(ctx);
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        self.limit_client(&live, client_ip).await?;
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            // HTTP/2 carries the host in `:authority` (pingora refuses userinfo there): keep its
            // port, as `Host` would have it.
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .map(str::to_owned);
        let facts = RequestFacts {
            raw_target: req.raw_path(),
            method: req.method.as_str(),
            path: req.uri.path(),
            headers: &req.headers,
            host: host.as_deref(),
            max_header_bytes: live.settings.max_request_header_bytes,
        };
        let routed = decide::route_request(&facts, &self.routes.load()).map_err(|(r, fact)| {
            ctx.facts.route = fact;
            r
        })?;
        if routed.upgrade {
            // Whatever the gateway answers itself (402, 503...), the client may already be
            // speaking the new protocol: never read another request from this connection.
            session.set_keepalive(None);
        }
        let route = routed.route;
        ctx.rewritten_path = routed.rewritten_path;
        ctx.client_host = host;
        // On h2 too: every stream of a TLS connection carries the connection's TLS digest.
        ctx.client_tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        ctx.route = Some(route.clone());
        self.limit_tenant(&live, &route).await?;
        // Applies to every body read from here on; a stalled upload gets a 408 (fail_to_proxy).
        session.set_read_timeout(Some(live.settings.body_read_timeout));

        let Some(offers) = route.offers.as_ref() else {
            ctx.facts.route = "free";
            return Ok(());
        };
        // Read only for priced routes: a free request copies neither.
        let req = session.req_header();
        let path_and_query = req
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let header = gate::payment_header(&req.headers).map(|(n, v)| (n, v.to_vec()));
        let standing = self
            .standing_for(&live, &route, offers, &path_and_query, ctx)
            .await?;
        if let (Some(_), Some(ip)) = (&header, client_ip) {
            if let Some(secs) = live.invalid.blocked_for(ip) {
                ctx.facts.attempt = Some("rate_limited");
                let msg = format!("too many invalid payments from this address; retry in {secs} s");
                return Err(Reply::error(429, "too_many_invalid_payments", msg));
            }
        }
        let record_invalid = |invalid: bool| {
            if let (true, Some(ip)) = (invalid, client_ip) {
                live.invalid.record_invalid(ip);
            }
        };
        let check = gate::check_payment(
            offers,
            header.as_ref().map(|(n, v)| (*n, v.as_slice())),
            live.settings.max_payment_header_bytes,
        );
        let (offer, proof) = match decide::presented(check, offers, &ctx.resource_url) {
            Presented::Paid { offer, proof } => (offer, proof),
            Presented::Refused { reply, invalid } => {
                if invalid {
                    ctx.facts.attempt = Some("invalid");
                } else {
                    ctx.facts.challenged = true;
                }
                record_invalid(invalid);
                return Err(reply);
            }
        };
        let header_bytes = header.map(|(_, v)| v).unwrap_or_default();
        let receipt_header = pay::receipt_header_for(&proof);
        let started = std::time::Instant::now();
        // The payment's futures are boxed (here and below): large, and inline they would make
        // every request's `request_filter` future, a free one's too, that much larger to
        // allocate and move.
        let admission = Box::pin(pay::admit(
            &self.payments,
            &route,
            offer,
            &proof,
            &header_bytes,
            receipt_header,
            standing.limit(),
        ))
        .await;
        ctx.facts.verification = Some((offer.network.to_string(), started.elapsed().as_secs_f64()));
        let mut state = decide::admitted(admission, offers, &ctx.resource_url, &standing).map_err(
            |(reply, fact, invalid)| {
                ctx.facts.attempt = Some(fact);
                record_invalid(invalid);
                reply
            },
        )?;
        ctx.facts.attempt = Some("admitted");
        if routed.upgrade {
            // A tunnel is paid for before it opens: once the 101 is out, the gateway sees none of
            // what flows through it (and pingora's upgrade hand-off must not wait on a settlement).
            state.policy = SettlePolicy::Before;
        }
        if state.policy == SettlePolicy::Before {
            let started = std::time::Instant::now();
            let outcome = Box::pin(pay::settle_detached(&self.payments, &mut state)).await;
            ctx.facts.settlement = Some((outcome.label(), Some(started.elapsed().as_secs_f64())));
            let settled = decide::settled(outcome, Some(offers), &ctx.resource_url, receipt_header);
            ctx.payment = Some(state);
            settled?;
            return Ok(());
        }
        ctx.payment = Some(state);
        Ok(())
    }
    /// The client address's rate limit (`[rate_limit]`, per client IP), when one is set.
    pub(super) async fn limit_client(
        &self,
        live: &ProxyLive,
        client_ip: Option<std::net::IpAddr>,
    ) -> Result<(), Reply> {
        if let Some(ip) = client_ip.filter(|_| live.limits.limits(Scope::ProxyIp)) {
            live.limits
                .check(Scope::ProxyIp, &ip.to_string())
                .await
                .map_err(decide::rate_limited)?;
        }
        Ok(())
    }

    /// The route's tenant's rate limit (`[rate_limit]`, per tenant), free routes included.
    pub(super) async fn limit_tenant(
        &self,
        live: &ProxyLive,
        route: &crate::routes::Route,
    ) -> Result<(), Reply> {
        live.limits
            .check(Scope::ProxyTenant, &route.config.tenant)
            .await
            .map_err(decide::rate_limited)
    }

    /// A priced request's tenant standing, before any payment is asked for (never take money
    /// that will not be served), and the request's `resource.url`.
    pub(super) async fn standing_for(
        &self,
        live: &ProxyLive,
        route: &crate::routes::Route,
        offers: &crate::pricing::Offers,
        path_and_query: &str,
        ctx: &mut RequestCtx,
    ) -> Result<Arc<crate::tenants::TenantState>, Reply> {
        ctx.facts.route = "priced";
        let standing = self
            .payments
            .tenants
            .state(&route.config.tenant)
            .await
            .map_err(|e| {
                tracing::warn!(tenant = %route.config.tenant, "tenant standing unavailable: {e}");
                Reply::new(decide::Body::Unavailable(
                    "the gateway cannot check this API's plan right now",
                ))
            })?;
        decide::check_standing(&standing, offers).map_err(|(r, refusal)| {
            ctx.facts.refusal = refusal;
            r
        })?;
        ctx.resource_url = gate::resource_url(
            live.settings.public_url.as_deref(),
            ctx.client_tls,
            ctx.client_host.as_deref(),
            path_and_query,
        );
        Ok(standing)
    }
}
