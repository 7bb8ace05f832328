from django.apps import AppConfig


class MaterialsConfig(AppConfig):
    name = "materials"
    verbose_name = "XAS topology screening"
    default_auto_field = "django.db.models.BigAutoField"
