"""The HTTP surface: the API, the web page, the OIDC issuers (real and development)."""
