from django.urls import path

from materials import views

app_name = "materials"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("materials/", views.material_list, name="material-list"),
    path("materials/<int:pk>/", views.material_detail, name="material-detail"),
]
