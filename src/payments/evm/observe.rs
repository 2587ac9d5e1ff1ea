//! Every RPC call of the EVM backend, timed and told to an `RpcObserver` (the gateway's metrics):
//! a tower layer under alloy's RPC client, so each call is seen once, where it is made, including
//! the ones alloy makes on our behalf (fee history for a fee estimate).
//!
//! The method becomes a label, so it is mapped onto a fixed set (`other` for the rest): a node or
//! a new alloy version can never grow the label set.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use alloy::rpc::json_rpc::{RequestPacket, ResponsePacket};
use alloy::transports::{TransportError, TransportFut};

use crate::payments::chain::{RpcObserver, RpcOutcome};

/// The methods the backend calls, as label values.
const METHODS: &[&str] = &[
    "eth_call",
    "eth_sendRawTransaction",
    "eth_sendRawTransactionSync",
    "eth_getTransactionReceipt",
    "eth_getTransactionByHash",
    "eth_getTransactionCount",
    "eth_blockNumber",
    "eth_getBalance",
    "eth_feeHistory",
    "eth_gasPrice",
    "eth_maxPriorityFeePerGas",
    "eth_getBlockByNumber",
    "eth_chainId",
    "eth_estimateGas",
];

/// The label for a call to `method`.
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

fn outcome_of(result: &Result<ResponsePacket, TransportError>) -> RpcOutcome {
    match result {
        Ok(r) if r.is_error() => RpcOutcome::RpcError,
        Ok(_) => RpcOutcome::Ok,
        Err(e) if e.is_error_resp() => RpcOutcome::RpcError,
        Err(_) => RpcOutcome::TransportError,
    }
}

/// The layer: wraps the HTTP transport of one network's client.
#[derive(Clone)]
pub struct ObserveLayer {
    pub network: Arc<str>,
    pub observer: Arc<dyn RpcObserver>,
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            network: self.network.clone(),
            observer: self.observer.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    network: Arc<str>,
    observer: Arc<dyn RpcObserver>,
}

impl<S> tower::Service<RequestPacket> for Observed<S>
where
    S: tower::Service<RequestPacket, Response = ResponsePacket, Error = TransportError>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        let method = match &req {
            RequestPacket::Single(r) => method_label(r.method()),
            RequestPacket::Batch(_) => "batch",
        };
        let (network, observer) = (self.network.clone(), self.observer.clone());
        let started = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            let seconds = started.elapsed().as_secs_f64();
            observer.rpc_call(&network, method, outcome_of(&result), seconds);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_known_set_are_other() {
        assert_eq!(method_label("eth_call"), "eth_call");
        assert_eq!(
            method_label("eth_sendRawTransaction"),
            "eth_sendRawTransaction"
        );
        assert_eq!(method_label("debug_traceTransaction"), "other");
        assert_eq!(method_label(""), "other");
    }
}
