"""Pure policy: identity from verified claims, rules, decisions. No I/O here."""
