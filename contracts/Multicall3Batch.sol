// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.26;

/// Multicall3's `aggregate3` with Multicall3's ABI (same selector, same tuple layouts), written
/// for the tests from the ABI: code that answers as Multicall3 does but is not Multicall3's. The
/// tests place it at Multicall3's address (0xcA11bde05977b3631167028862bE2a173976CA11,
/// `anvil_setCode`) to show that the gateway trusts only Multicall3's own code there (it checks
/// the code's hash): a chain's other code at that address could answer anything.
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
