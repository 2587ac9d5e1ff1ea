// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.26;

/// An attacker's code at Multicall3's address (as was deployed there on one chain with the
/// Multicall3 deployer's compromised key): `aggregate3` with Multicall3's ABI that calls nothing
/// and answers every call as succeeded. A gateway trusting it would pass, in a grouped
/// simulation, a payment that cannot pay. The tests place it at that address (`anvil_setCode`)
/// to show that the gateway never trusts it.
contract LyingMulticall3 {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory results) {
        results = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; i++) {
            results[i] = Result(true, "");
        }
    }
}
