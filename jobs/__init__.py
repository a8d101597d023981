"""The jobs app. Django's own modules sit here (models, admin, apps, migrations, management commands) with
the job's one JSON shape (serializers) and the Dramatiq entry points (actors); the rest is grouped by what it
is for: lifecycle/, web/, ops/, workers/. Plain stage code lives outside, in stages/."""
