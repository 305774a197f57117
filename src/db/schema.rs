//! Table definitions shared by both backends (the migrations keep the column
//! types compatible: integers, text, bytes, UTC timestamps).

diesel::table! {
    notifications (id) {
        id -> BigInt,
        source_topic -> Nullable<Text>,
        source_partition -> Nullable<Integer>,
        source_offset -> Nullable<BigInt>,
        users -> Text,
        event -> Text,
        message -> Text,
        status -> Text,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        next_attempt_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
        source_fingerprint -> Nullable<BigInt>,
    }
}

diesel::table! {
    dead_letters (id) {
        id -> BigInt,
        topic -> Text,
        partition -> Integer,
        offset -> BigInt,
        key -> Nullable<Binary>,
        payload -> Nullable<Binary>,
        error -> Text,
        failed_at -> Timestamp,
        replayed_at -> Nullable<Timestamp>,
        fingerprint -> BigInt,
        replaying_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    job_runs (id) {
        id -> BigInt,
        job -> Text,
        holder -> Text,
        started_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        outcome -> Text,
        error -> Nullable<Text>,
        details -> Nullable<Text>,
    }
}

diesel::table! {
    job_leases (job) {
        job -> Text,
        holder -> Text,
        lease_until -> Timestamp,
        token -> BigInt,
    }
}

diesel::table! {
    price_events (id) {
        id -> BigInt,
        symbol -> Text,
        price -> Double,
        timestamp -> Timestamp,
        source -> Text,
        source_topic -> Text,
        source_partition -> Integer,
        source_offset -> BigInt,
        raw_response_id -> Nullable<Text>,
        source_fingerprint -> Nullable<BigInt>,
    }
}

diesel::table! {
    predictions (id) {
        id -> BigInt,
        source_topic -> Text,
        source_partition -> Integer,
        source_offset -> BigInt,
        source_fingerprint -> Nullable<BigInt>,
        key -> Nullable<Text>,
        model -> Text,
        model_version -> Nullable<Text>,
        input -> Text,
        prediction -> Text,
        latency_ms -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    consumer_offsets (group_id, topic, partition) {
        group_id -> Text,
        topic -> Text,
        partition -> Integer,
        next_offset -> BigInt,
        last_fingerprint -> BigInt,
        updated_at -> Timestamp,
        topic_id -> Nullable<Text>,
    }
}

diesel::table! {
    price_stats (symbol) {
        symbol -> Text,
        events -> BigInt,
        last_price -> Double,
        min_price -> Double,
        max_price -> Double,
        updated_at -> Timestamp,
        moving_average -> Nullable<Double>,
        moving_average_window -> Nullable<Integer>,
    }
}

diesel::table! {
    raw_responses (id) {
        id -> Text,
        provider -> Text,
        symbol -> Text,
        http_status -> Nullable<Integer>,
        body -> Nullable<Text>,
        error -> Nullable<Text>,
        fetched_at -> Timestamp,
    }
}

diesel::table! {
    outbox (id) {
        id -> BigInt,
        topic -> Text,
        key -> Text,
        payload -> Text,
        created_at -> Timestamp,
        published_at -> Nullable<Timestamp>,
        attempts -> Integer,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    paused_partitions (topic, partition) {
        topic -> Text,
        partition -> Integer,
        paused_at -> Timestamp,
    }
}
