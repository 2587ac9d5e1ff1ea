// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.26;

/// The one function of Multicall3 that x402-gate's batched settlement calls, `aggregate3`, with
/// Multicall3's ABI (same selector, same tuple layouts). Multicall3 is deployed at
/// 0xcA11bde05977b3631167028862bE2a173976CA11 on nearly every EVM chain, but not on a fresh
/// anvil: the tests place this contract's runtime code at that address (`anvil_setCode`), so
/// the gateway meets there what it meets on a real chain. Written for the tests from the ABI.
contract Multicall3Batch {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    /// Calls each target in order. A call that fails is recorded as failed when it allows
    /// failure, and reverts the whole batch when it does not.
    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory results) {
        uint256 n = calls.length;
        results = new Result[](n);
        for (uint256 i = 0; i < n; i++) {
            (bool ok, bytes memory data) = calls[i].target.call(calls[i].callData);
            require(ok || calls[i].allowFailure, "Multicall3: call failed");
            results[i] = Result(ok, data);
        }
    }
}
