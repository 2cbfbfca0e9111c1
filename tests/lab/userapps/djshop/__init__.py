"""A user's Django project, as ``forkguard lab --app djshop.wsgi`` meets it: no lab, no
forkguard. Its app config checks the database when Django starts (a common pattern), so the
master holds an open connection when the server forks its workers."""
