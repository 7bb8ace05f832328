"""Server-rendered pages: views (``views``, ``views_screening``), what each page shows
(``pages``, ``candidates``, ``reliability``), plotly figures (``figures``) and forms (``forms``)."""
