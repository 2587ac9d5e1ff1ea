//! Error texts made safe to store, log and show to tenants.
//!
//! RPC client errors (alloy over reqwest) print the endpoint's URL, and hosted RPC providers put
//! the operator's API key in that URL (`…/v2/<key>`, `?apikey=<key>`). Such a text must never
//! reach a tenant (`payments[].error`) or a log line. [`scrub`] is the one function that cleans an
//! error text: every place that turns an RPC error into a string, writes an error into the store,
//! or shows a stored error calls it.
//!
//! What it removes: every URL (`scheme://` up to the next whitespace, surrounding brackets and
//! quotes kept so the sentence still reads), the value of `name=value` / `name:value` pairs whose
//! name says key, token, secret, password or auth, the word after `Bearer` / `Basic`, and any
//! long opaque word mixing letters and digits (API keys, our own `x402_live_…` keys). What it
//! keeps: a leading reason code (`invalid_exact_evm_transaction_failed: …`), words, numbers,
//! CAIP-2 ids, and `0x` hex (addresses and transaction hashes are public and what an operator
//! needs to follow a payment). Pure: no I/O.

/// What a URL is replaced with.
pub const URL_MARK: &str = "<url>";
/// What a secret-looking word or value is replaced with.
pub const SECRET_MARK: &str = "<redacted>";

/// An opaque word at least this long that mixes letters and digits is taken for a key. Shorter
/// ones (nonces, ports, CAIP-2 references) are harmless and useful.
const OPAQUE_MIN_LEN: usize = 20;

/// Names whose `name=value` value is a secret (matched case-insensitively, as a substring, so
/// `apikey`, `api_key`, `x-api-key`, `access_token`, `client_secret` all count).
const SECRET_NAMES: &[&str] = &["key", "token", "secret", "password", "passwd", "auth"];

/// `text` with URLs and anything that looks like a key or token removed; see the module doc.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut previous_word = "";
    let mut first = true;
    let mut rest = text;
    while !rest.is_empty() {
        let ws = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..ws]);
        rest = &rest[ws..];
        if rest.is_empty() {
            break;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        if first && reason_of(text).is_some_and(|r| word.strip_suffix(':') == Some(r)) {
            out.push_str(word);
        } else {
            scrub_word(word, previous_word, &mut out);
        }
        first = false;
        previous_word = word;
        rest = &rest[end..];
    }
    out
}

/// The leading reason code of a stored error text (`reason_code: message`), if it has one.
pub fn reason_of(text: &str) -> Option<&str> {
    let (code, _) = text.split_once(": ")?;
    let mut bytes = code.bytes();
    let starts_lower = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    (starts_lower && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
        .then_some(code)
}

/// `text` scrubbed, led by a reason code: its own if it has one, else `default_reason`. This is
/// the form in which error texts are stored.
pub fn with_reason(default_reason: &str, text: &str) -> String {
    let clean = scrub(text);
    if reason_of(&clean).is_some() {
        clean
    } else {
        format!("{default_reason}: {clean}")
    }
}

fn scrub_word(word: &str, previous_word: &str, out: &mut String) {
    // A URL, wherever it starts in the word (`(http://…)`, `"wss://…",`).
    if let Some(start) = url_start(word) {
        out.push_str(&word[..start]);
        out.push_str(URL_MARK);
        // Keep closing punctuation so `for url (<url>)` still reads.
        let tail = &word[start..];
        let kept = tail.len() - tail.trim_end_matches(is_closing).len();
        out.push_str(&tail[tail.len() - kept..]);
        return;
    }
    // The credential after an HTTP auth scheme.
    let previous = previous_word.trim_matches(is_wrapping).to_ascii_lowercase();
    if previous == "bearer" || previous == "basic" {
        push_wrapped(word, SECRET_MARK, out);
        return;
    }
    // `apikey=…`, `token:…`, `password=…`.
    if let Some(split) = word.find(['=', ':']) {
        let (name, value) = (&word[..split], &word[split + 1..]);
        let lower = name.to_ascii_lowercase();
        if !value.is_empty() && SECRET_NAMES.iter().any(|s| lower.contains(s)) {
            out.push_str(&word[..=split]);
            out.push_str(SECRET_MARK);
            let kept = value.len() - value.trim_end_matches(is_closing).len();
            out.push_str(&value[value.len() - kept..]);
            return;
        }
    }
    let core = word.trim_matches(is_wrapping);
    if looks_opaque(core) {
        push_wrapped(word, SECRET_MARK, out);
        return;
    }
    out.push_str(word);
}

/// Replaces the core of `word` with `mark`, keeping its surrounding brackets and punctuation.
fn push_wrapped(word: &str, mark: &str, out: &mut String) {
    let lead = word.len() - word.trim_start_matches(is_wrapping).len();
    let trail = word.len() - word.trim_end_matches(is_wrapping).len();
    if lead + trail >= word.len() {
        out.push_str(word);
        return;
    }
    out.push_str(&word[..lead]);
    out.push_str(mark);
    out.push_str(&word[word.len() - trail..]);
}

/// Where a `scheme://` URL starts in `word`, if it holds one.
fn url_start(word: &str) -> Option<usize> {
    let sep = word.find("://")?;
    let head = &word[..sep];
    let scheme_len = head.len()
        - head
            .trim_end_matches(|c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
            .len();
    let start = sep - scheme_len;
    word[start..]
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        .then_some(start)
}

fn looks_opaque(core: &str) -> bool {
    if core.len() < OPAQUE_MIN_LEN {
        return false;
    }
    // Addresses and transaction hashes are public, and what an operator follows a payment by.
    if let Some(hex) = core.strip_prefix("0x") {
        if hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
    }
    core.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'/' | b'=' | b'.' | b'~')
    }) && core.bytes().any(|b| b.is_ascii_digit())
        && core.bytes().any(|b| b.is_ascii_alphabetic())
}

fn is_closing(c: char) -> bool {
    matches!(
        c,
        ')' | ']' | '}' | '>' | '"' | '\'' | '`' | ',' | ';' | '.'
    )
}

fn is_wrapping(c: char) -> bool {
    matches!(
        c,
        '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>' | '"' | '\'' | '`' | ',' | ';' | ':' | '.'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AbCdEf0123456789GhIjKlMnOpQrStUv";

    #[test]
    fn a_reqwest_error_loses_its_url_and_keeps_its_sentence() {
        let text = format!(
            "eip155:84532: error sending request for url (https://base-sepolia.g.alchemy.com/v2/{KEY})"
        );
        assert_eq!(
            scrub(&text),
            "eip155:84532: error sending request for url (<url>)"
        );
        let text =
            "fee estimate: error sending request for url (http://127.0.0.1:8545/?apikey=abc)";
        assert_eq!(
            scrub(text),
            "fee estimate: error sending request for url (<url>)"
        );
        assert_eq!(
            scrub("connect to \"wss://mainnet.infura.io/ws/v3/0123abcd\", retrying"),
            "connect to \"<url>\", retrying"
        );
    }

    #[test]
    fn the_leading_reason_code_and_public_facts_stay() {
        let tx = "0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060";
        let addr = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
        let text = format!(
            "invalid_exact_evm_transaction_failed: the settlement transaction {tx} to {addr} reverted"
        );
        assert_eq!(scrub(&text), text);
        let text = "invalid_exact_evm_token_name_mismatch: the token's name() is \"USDC\"";
        assert_eq!(scrub(text), text);
        let text = "origin answered 500 after 3 attempts on eip155:84532 (nonce 42)";
        assert_eq!(scrub(text), text);
        // Whitespace is kept as it was.
        assert_eq!(scrub("a  b\n\tc "), "a  b\n\tc ");
        assert_eq!(scrub(""), "");
    }

    #[test]
    fn key_like_values_and_words_are_redacted() {
        assert_eq!(
            scrub("bad request apikey=s3cr3t&x=1, token:abc"),
            "bad request apikey=<redacted>, token:<redacted>"
        );
        assert_eq!(
            scrub("Authorization: Bearer abc.def"),
            "Authorization: Bearer <redacted>"
        );
        assert_eq!(
            scrub(&format!(
                "node said ({KEY}) and x402_live_{}",
                "ab12".repeat(12)
            )),
            "node said (<redacted>) and <redacted>"
        );
        // An uppercase name counts too; a name that is not secret-looking does not.
        assert_eq!(
            scrub("X-API-KEY=zzz nonce=7"),
            "X-API-KEY=<redacted> nonce=7"
        );
        // Long words without digits are prose, not keys.
        assert_eq!(
            scrub("internationalization_considerations"),
            "internationalization_considerations"
        );
    }

    #[test]
    fn reason_codes_are_read_and_added_when_missing() {
        assert_eq!(
            reason_of("invalid_exact_evm_transaction_failed: reverted"),
            Some("invalid_exact_evm_transaction_failed")
        );
        assert_eq!(reason_of("eip155:84532: error"), None);
        assert_eq!(reason_of("fee estimate: error"), None);
        assert_eq!(reason_of("no code here"), None);
        assert_eq!(
            with_reason(
                "not_charged",
                "fee estimate: error sending request for url (http://h/?k=1)"
            ),
            "not_charged: fee estimate: error sending request for url (<url>)"
        );
        assert_eq!(
            with_reason(
                "settlement_failed",
                "invalid_exact_evm_transaction_failed: reverted"
            ),
            "invalid_exact_evm_transaction_failed: reverted"
        );
    }
}
