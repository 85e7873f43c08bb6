-- An API key's secret sealed under the master key (purpose `api-key:<id>`),
-- for AWS Signature V4: the server must derive the signing key from the
-- secret itself. NULL for keys created before; those work as bearer only.
ALTER TABLE api_keys ADD COLUMN secret_sealed BLOB;
