-- Frozen once released: the SQL migration 0012 installs. Never edit it after its release: a
-- change to these functions is a new migration with a file of its own
-- (paycode.server.database.functions).

-- As 0010, with one change (docs/spec.md §14; paycode.server.charge.steps is the reference): a
-- code made by a server-held issuer (devices.online_for_device_id set) records its payment
-- under the device that asked for it, with the issuer in payments.online_issuer_id. The
-- issuer's own row decides revocation, as any device's does; ordinary codes read the same row
-- as before and nothing more.

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
    p_code_version text, p_now_s double precision, p_limits bigint[], p_day integer,
    p_confirm_by_s double precision
) RETURNS text LANGUAGE plpgsql AS $fn$
-- p_limits: the server's default (payment, daily amount, daily count) password-free limits,
-- then the hard ceiling of any offline code (paycode.server.safety.limits).
DECLARE
    v_revoked_at_s double precision;
    v_locked_at_s double precision;
    v_online_for text;
    v_payer integer;
    v_payee integer;
    v_balance_minor bigint;
    v_payment_max_minor bigint;
    v_daily_max_minor bigint;
    v_daily_count_max bigint;
    v_day integer;
    v_day_count integer;
    v_day_minor bigint;
    v_failure text;
    v_status text := 'succeeded';
BEGIN
    SELECT d.revoked_at_s, d.locked_at_s, d.online_for_device_id
        INTO v_revoked_at_s, v_locked_at_s, v_online_for
        FROM devices d WHERE d.id = p_device_id;
    IF NOT FOUND OR v_revoked_at_s IS NOT NULL THEN
        RETURN 'device_revoked';
    END IF;
    IF v_locked_at_s IS NOT NULL THEN
        RETURN 'device_locked';
    END IF;
    -- Before the claim: a cashier's reused order id must not burn the customer's code.
    PERFORM 1 FROM payments p WHERE p.merchant_id = p_merchant_id
        AND p.merchant_order_id = p_order_id AND p.status = 'succeeded';
    IF FOUND THEN
        RETURN 'duplicate_order';
    END IF;
    INSERT INTO claims (claim_key, device_id, expires_at_s)
        VALUES (p_claim_key, p_device_id, p_claim_expires_at_s) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'code_replayed';
    END IF;
    -- p_drift_steps is what the code showed; one step late is latency, not a slow clock
    -- (paycode.server.charge.planning.learned_drift), judged against the row as it is now.
    UPDATE devices d SET drift_steps = p_drift_steps
        WHERE d.id = p_device_id AND d.drift_steps <> p_drift_steps
          AND d.drift_steps - 1 <> p_drift_steps;

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
        -- Read after the lock: a racing charge of the same payer has committed its count.
        SELECT a.balance_minor, coalesce(a.pinless_payment_max_minor, p_limits[1]),
               coalesce(a.pinless_daily_max_minor, p_limits[2]),
               coalesce(a.pinless_daily_count_max, p_limits[3]),
               a.pinless_day, a.pinless_day_count, a.pinless_day_minor
            INTO v_balance_minor, v_payment_max_minor, v_daily_max_minor, v_daily_count_max,
                 v_day, v_day_count, v_day_minor
            FROM accounts a WHERE a.id = v_payer;
        IF v_day <> p_day THEN
            v_day_count := 0;
            v_day_minor := 0;
        END IF;
        IF p_amount_minor > p_limits[4] THEN
            v_failure := 'limit_exceeded';
        ELSIF v_balance_minor < p_amount_minor THEN
            v_failure := 'insufficient_funds';
        ELSIF p_amount_minor > v_payment_max_minor OR v_day_count + 1 > v_daily_count_max
              OR v_day_minor + p_amount_minor > v_daily_max_minor THEN
            v_status := 'pending_confirmation';
            INSERT INTO payments (id, merchant_id, terminal_id, user_id, device_id,
                                  amount_minor, currency, refunded_minor, status,
                                  failure_code, merchant_order_id, code_version,
                                  created_at_s, confirm_by_s, online_issuer_id)
                VALUES (p_payment_id, p_merchant_id, p_terminal_id, p_user_id,
                        coalesce(v_online_for, p_device_id), p_amount_minor, p_currency, 0,
                        v_status, NULL, p_order_id, p_code_version, p_now_s, p_confirm_by_s,
                        CASE WHEN v_online_for IS NULL THEN NULL ELSE p_device_id END);
            RETURN 'confirmation_required';
        ELSE
            INSERT INTO payments (id, merchant_id, terminal_id, user_id, device_id, amount_minor,
                                  currency, refunded_minor, status, failure_code,
                                  merchant_order_id, code_version, created_at_s,
                                  online_issuer_id)
                VALUES (p_payment_id, p_merchant_id, p_terminal_id, p_user_id,
                        coalesce(v_online_for, p_device_id), p_amount_minor, p_currency, 0,
                        'succeeded', NULL, p_order_id, p_code_version, p_now_s,
                        CASE WHEN v_online_for IS NULL THEN NULL ELSE p_device_id END)
                ON CONFLICT (merchant_id, merchant_order_id) WHERE status = 'succeeded'
                DO NOTHING;
            IF NOT FOUND THEN
                -- A racing charge of the same order committed after the check above: give
                -- the code back (our claim goes with this transaction's other rows: none).
                DELETE FROM claims c WHERE c.claim_key = p_claim_key;
                RETURN 'duplicate_order';
            END IF;
        END IF;
    END IF;
    IF v_failure IS NOT NULL THEN
        INSERT INTO payments (id, merchant_id, terminal_id, user_id, device_id, amount_minor,
                              currency, refunded_minor, status, failure_code, merchant_order_id,
                              code_version, created_at_s, online_issuer_id)
            VALUES (p_payment_id, p_merchant_id, p_terminal_id, p_user_id,
                    coalesce(v_online_for, p_device_id), p_amount_minor, p_currency, 0,
                    'failed', v_failure, p_order_id, p_code_version, p_now_s,
                    CASE WHEN v_online_for IS NULL THEN NULL ELSE p_device_id END);
        RETURN v_failure;
    END IF;

    UPDATE accounts a SET balance_minor = a.balance_minor - p_amount_minor,
                          pinless_day = p_day, pinless_day_count = v_day_count + 1,
                          pinless_day_minor = v_day_minor + p_amount_minor
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
    p_limits bigint[], p_day integer, p_confirm_by_s double precision,
    p_suspect_device_id text,
    -- Defaults: a server still on the code before 0007 calls without them (rolling upgrade).
    p_event_id text DEFAULT NULL, p_notices jsonb DEFAULT NULL,
    OUT o_outcome text, OUT o_status integer, OUT o_body text, OUT o_request_hash text
) LANGUAGE plpgsql AS $fn$
DECLARE
    v_revoked_at_s double precision;
    v_blocked_until_s double precision;
    v_notice jsonb;
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
        -- A genuine code refused for time is claimed all the same: it never pays later.
        IF p_claim_key IS NOT NULL THEN
            INSERT INTO claims (claim_key, device_id, expires_at_s)
                VALUES (p_claim_key, p_device_id, p_claim_expires_at_s) ON CONFLICT DO NOTHING;
        END IF;
        IF p_count_failure THEN
            PERFORM paycode_count_failure(p_guard_scopes, p_guard_limits, p_now_s,
                                          p_guard_window_s, p_guard_base_s, p_guard_max_s);
            -- Forgeries aimed at one device lock it until its wallet calls in (re-sync).
            UPDATE devices d SET locked_at_s = p_now_s
                WHERE d.id = p_suspect_device_id AND d.locked_at_s IS NULL
                  AND EXISTS (SELECT 1 FROM failure_counters f
                              WHERE f.scope = 'device:' || p_suspect_device_id
                                AND f.blocked_until_s > p_now_s);
        END IF;
    ELSE
        o_outcome := paycode_charge_claimed(
            p_device_id, p_user_id, p_claim_key, p_claim_expires_at_s, p_drift_steps,
            p_payment_id, p_transaction_id, p_merchant_id, p_terminal_id, p_amount_minor,
            p_currency, p_order_id, p_code_version, p_now_s, p_limits, p_day, p_confirm_by_s);
        -- p_notices: outcome -> [event type, body]; only outcomes that recorded a payment.
        v_notice := p_notices -> o_outcome;
        IF v_notice IS NOT NULL THEN
            INSERT INTO notification_outbox (event_id, merchant_id, payment_id, event_type,
                                             payload, created_at_s, attempts, next_attempt_at_s)
                VALUES (p_event_id, p_merchant_id, p_payment_id, v_notice ->> 0,
                        v_notice ->> 1, p_now_s, 0, p_now_s);
        END IF;
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
