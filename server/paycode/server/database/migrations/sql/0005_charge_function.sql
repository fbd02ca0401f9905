-- Frozen: the SQL migration 0005 installed, as it was released. Never edit it: a change to these
-- functions is a new migration with a file of its own (paycode.server.database.functions).
-- The module paths in its comments are those of that release.

-- The charge transaction on PostgreSQL: one round trip instead of a dozen (server/charge_store.py
-- runs the same steps statement by statement on SQLite; tests hold both to the same behaviour).
-- Races are decided by the primary keys (nonce, idempotency key, claim), the partial unique
-- index on successful merchant orders, and row locks taken on accounts in ascending id order,
-- the order every transfer in server/ledger.py uses, so charges, refunds and top-ups cannot
-- deadlock on each other. The guessing guard (server/guard.py) checks and counts failures here
-- too, so it costs no extra round trip.

DROP FUNCTION IF EXISTS paycode_charge;
DROP FUNCTION IF EXISTS paycode_charge_claimed;
DROP FUNCTION IF EXISTS paycode_count_failure;

CREATE FUNCTION paycode_count_failure(
    p_scopes text[], p_limits integer[], p_now_s double precision, p_window_s double precision,
    p_base_s double precision, p_max_s double precision
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_failures integer;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_scopes, 1), 0) LOOP
        INSERT INTO failure_counters AS f (scope, window_start_s, failures, strikes,
                                           blocked_until_s)
            VALUES (p_scopes[i], p_now_s, 1, 0, NULL)
            ON CONFLICT (scope) DO UPDATE SET
                strikes = CASE WHEN f.window_start_s + p_window_s <= p_now_s
                                AND coalesce(f.blocked_until_s, 0) + p_max_s <= p_now_s
                               THEN 0 ELSE f.strikes END,
                failures = CASE WHEN f.window_start_s + p_window_s <= p_now_s
                                THEN 1 ELSE f.failures + 1 END,
                window_start_s = CASE WHEN f.window_start_s + p_window_s <= p_now_s
                                      THEN p_now_s ELSE f.window_start_s END
            RETURNING f.failures INTO v_failures;
        IF v_failures >= p_limits[i] THEN
            UPDATE failure_counters f
                SET blocked_until_s = p_now_s + least(p_max_s, p_base_s * (1::bigint << least(f.strikes, 20))),
                    strikes = f.strikes + 1, failures = 0, window_start_s = p_now_s
                WHERE f.scope = p_scopes[i];
        END IF;
    END LOOP;
END
$fn$;

CREATE FUNCTION paycode_charge_claimed(
    p_device_id text, p_user_id text, p_claim_key text, p_claim_expires_at_s double precision,
    p_drift_steps integer, p_payment_id text, p_transaction_id text, p_merchant_id text,
    p_terminal_id text, p_amount_minor bigint, p_currency text, p_order_id text,
    p_code_version text, p_now_s double precision
) RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
    v_revoked_at_s double precision;
    v_payer integer;
    v_payee integer;
    v_balance_minor bigint;
    v_failure text;
BEGIN
    SELECT d.revoked_at_s INTO v_revoked_at_s FROM devices d WHERE d.id = p_device_id;
    IF NOT FOUND OR v_revoked_at_s IS NOT NULL THEN
        RETURN 'device_revoked';
    END IF;
    INSERT INTO claims (claim_key, device_id, expires_at_s)
        VALUES (p_claim_key, p_device_id, p_claim_expires_at_s) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'code_replayed';
    END IF;
    UPDATE devices d SET drift_steps = p_drift_steps
        WHERE d.id = p_device_id AND d.drift_steps <> p_drift_steps;

    SELECT a.id INTO v_payer FROM accounts a
        WHERE a.owner_kind = 'user' AND a.owner_id = p_user_id AND a.currency = p_currency;
    SELECT a.id INTO v_payee FROM accounts a
        WHERE a.owner_kind = 'merchant' AND a.owner_id = p_merchant_id AND a.currency = p_currency;
    IF v_payee IS NULL THEN
        RAISE EXCEPTION 'paycode: merchant % has no % account', p_merchant_id, p_currency;
    END IF;
    IF v_payer IS NULL THEN
        v_failure := 'currency_mismatch';
    ELSE
        PERFORM 1 FROM accounts a WHERE a.id IN (v_payer, v_payee) ORDER BY a.id FOR UPDATE;
        SELECT a.balance_minor INTO v_balance_minor FROM accounts a WHERE a.id = v_payer;
        IF v_balance_minor < p_amount_minor THEN
            v_failure := 'insufficient_funds';
        ELSE
            INSERT INTO payments (id, merchant_id, terminal_id, user_id, device_id, amount_minor,
                                  currency, refunded_minor, status, failure_code,
                                  merchant_order_id, code_version, created_at_s)
                VALUES (p_payment_id, p_merchant_id, p_terminal_id, p_user_id, p_device_id,
                        p_amount_minor, p_currency, 0, 'succeeded', NULL, p_order_id,
                        p_code_version, p_now_s)
                ON CONFLICT (merchant_id, merchant_order_id) WHERE status = 'succeeded'
                DO NOTHING;
            IF NOT FOUND THEN
                v_failure := 'duplicate_order';
            END IF;
        END IF;
    END IF;
    IF v_failure IS NOT NULL THEN
        INSERT INTO payments (id, merchant_id, terminal_id, user_id, device_id, amount_minor,
                              currency, refunded_minor, status, failure_code, merchant_order_id,
                              code_version, created_at_s)
            VALUES (p_payment_id, p_merchant_id, p_terminal_id, p_user_id, p_device_id,
                    p_amount_minor, p_currency, 0, 'failed', v_failure, p_order_id,
                    p_code_version, p_now_s);
        RETURN v_failure;
    END IF;

    UPDATE accounts a SET balance_minor = a.balance_minor - p_amount_minor
        WHERE a.id = v_payer AND a.balance_minor >= p_amount_minor;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'paycode: balance of account % changed under its row lock', v_payer;
    END IF;
    UPDATE accounts a SET balance_minor = a.balance_minor + p_amount_minor WHERE a.id = v_payee;
    INSERT INTO ledger_transactions (id, kind, payment_id, created_at_s)
        VALUES (p_transaction_id, 'charge', p_payment_id, p_now_s);
    INSERT INTO ledger_entries (transaction_id, account_id, amount_minor, currency)
        VALUES (p_transaction_id, v_payer, -p_amount_minor, p_currency),
               (p_transaction_id, v_payee, p_amount_minor, p_currency);
    RETURN 'succeeded';
END
$fn$;

CREATE FUNCTION paycode_charge(
    p_guard_scopes text[], p_guard_limits integer[], p_guard_window_s double precision,
    p_guard_base_s double precision, p_guard_max_s double precision, p_count_failure boolean,
    p_terminal_id text, p_nonce text, p_nonce_expires_at_s double precision,
    p_scope text, p_key text, p_request_hash text, p_now_s double precision,
    p_rejection text, p_replies jsonb,
    p_device_id text, p_user_id text, p_claim_key text, p_claim_expires_at_s double precision,
    p_drift_steps integer, p_payment_id text, p_transaction_id text, p_merchant_id text,
    p_amount_minor bigint, p_currency text, p_order_id text, p_code_version text,
    OUT o_outcome text, OUT o_status integer, OUT o_body text, OUT o_request_hash text
) LANGUAGE plpgsql AS $fn$
DECLARE
    v_revoked_at_s double precision;
    v_blocked_until_s double precision;
BEGIN
    SELECT t.revoked_at_s INTO v_revoked_at_s FROM terminals t WHERE t.id = p_terminal_id;
    IF NOT FOUND OR v_revoked_at_s IS NOT NULL THEN
        o_outcome := 'terminal_revoked';
        RETURN;
    END IF;
    SELECT max(f.blocked_until_s) INTO v_blocked_until_s FROM failure_counters f
        WHERE f.scope = ANY (p_guard_scopes) AND f.blocked_until_s > p_now_s;
    IF v_blocked_until_s IS NOT NULL THEN
        o_outcome := 'rate_limited';
        o_body := v_blocked_until_s::text;
        RETURN;
    END IF;
    INSERT INTO request_nonces (scope, nonce, expires_at_s)
        VALUES (p_scope, p_nonce, p_nonce_expires_at_s) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        o_outcome := 'nonce_replayed';
        RETURN;
    END IF;
    INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response_body,
                                  created_at_s)
        VALUES (p_scope, p_key, p_request_hash, 0, '{}', p_now_s) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        -- A concurrent twin waited here for the first transaction, and now reads its reply.
        SELECT 'stored', k.status_code, k.response_body, k.request_hash
            INTO o_outcome, o_status, o_body, o_request_hash
            FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
        RETURN;
    END IF;
    IF p_rejection IS NOT NULL THEN
        o_outcome := p_rejection;
        IF p_count_failure THEN
            PERFORM paycode_count_failure(p_guard_scopes, p_guard_limits, p_now_s,
                                          p_guard_window_s, p_guard_base_s, p_guard_max_s);
        END IF;
    ELSE
        o_outcome := paycode_charge_claimed(
            p_device_id, p_user_id, p_claim_key, p_claim_expires_at_s, p_drift_steps,
            p_payment_id, p_transaction_id, p_merchant_id, p_terminal_id, p_amount_minor,
            p_currency, p_order_id, p_code_version, p_now_s);
    END IF;
    o_status := (p_replies -> o_outcome ->> 0)::integer;
    o_body := p_replies -> o_outcome ->> 1;
    o_request_hash := p_request_hash;
    IF o_status IS NULL OR o_body IS NULL THEN
        RAISE EXCEPTION 'paycode: no reply rendered for outcome %', o_outcome;
    END IF;
    UPDATE idempotency_keys k SET status_code = o_status, response_body = o_body
        WHERE k.scope = p_scope AND k.key = p_key;
END
$fn$;
