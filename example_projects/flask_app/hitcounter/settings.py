"""Default settings: two Redis servers on this machine standing in for two regions.

Override any of them from the environment with the ``FLASK_`` prefix, e.g.
``FLASK_GEOFAILOVER_URL='redis://...;redis://...'`` or
``FLASK_GEOFAILOVER_OPTIONS='{"failback_grace_period": 30}'`` (JSON).
"""

# us-east is preferred (higher weight); eu-west takes over when it fails.
GEOFAILOVER_URL = (
    "redis://127.0.0.1:6379/0?name=us-east&weight=2;"
    "redis://127.0.0.1:6380/0?name=eu-west&weight=1"
)

GEOFAILOVER_OPTIONS = {
    # Come back to us-east once it has been healthy for 5 s (default 10 s).
    "failback_grace_period": 5,
    # Shown next to this process in `flask geofailover status`.
    "app_label": "hitcounter",
    # Our own code reads strings, not bytes.
    "decode_responses": True,
}
