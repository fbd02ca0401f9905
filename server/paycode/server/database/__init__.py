"""The database: engine and sessions, the tables, migrations, per-process caches of rows."""

# The offline and points tables join Base.metadata whenever any part of the database package
# is used, so create_all and the migrations' target metadata always hold every table.
from paycode.server.database import offline_models as offline_models
from paycode.server.database import online_models as online_models
from paycode.server.database import points_models as points_models
