from django.contrib.auth import views as auth_views
from django.urls import path

from materials.web import views, views_screening

app_name = "materials"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("candidates/", views.candidate_list, name="candidate-list"),
    path("candidates/export.csv", views.candidate_export, name="candidate-export"),
    path("materials/", views.material_list, name="material-list"),
    path("materials/<int:pk>/", views.material_detail, name="material-detail"),
    path("models/compare/", views.model_compare, name="model-compare"),
    path("models/<int:pk>/", views.model_detail, name="model-detail"),
    path("dataset/", views.dataset_detail, name="dataset"),
    path("screenings/", views_screening.screening_list, name="screening-list"),
    path("screenings/new/", views_screening.screening_upload, name="screening-upload"),
    path("screenings/<int:pk>/", views_screening.screening_detail, name="screening-detail"),
    path("screenings/<int:pk>/status.json", views_screening.screening_status, name="screening-status"),
    path("screenings/<int:pk>/candidates.csv", views_screening.screening_download, name="screening-download"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="materials/login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="materials:dashboard"), name="logout"),
]
