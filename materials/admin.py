from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.shortcuts import render

from materials import jobs, models


@admin.register(models.Material)
class MaterialAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "reduced_formula",
        "mp_id",
        "materiae_id",
        "amcsd_id",
        "space_group_number",
        "crystal_system",
        "label",
        "has_spectra",
        "source",
    ]
    list_filter = ["label", "has_spectra", "source", "crystal_system", "structure_source"]
    search_fields = ["reduced_formula", "formula", "mp_id", "materiae_id", "=amcsd_id"]
    readonly_fields = ["elements_key", "created"]
    list_per_page = 50
    show_full_result_count = False


class OfMaterialAdmin(admin.ModelAdmin):
    """Rows that belong to a material (many per material): the material is a raw id,
    fetched with the row, and lists skip the full count."""

    list_select_related = ["material"]
    raw_id_fields = ["material"]
    show_full_result_count = False


@admin.register(models.Spectrum)
class SpectrumAdmin(OfMaterialAdmin):
    list_display = ["id", "material", "element", "edge", "source", "npoints", "source_release", "created"]
    list_filter = ["source", "edge", "element"]
    search_fields = ["material__reduced_formula", "material__mp_id", "element"]


@admin.register(models.TopologyLabel)
class TopologyLabelAdmin(OfMaterialAdmin):
    list_display = ["id", "material", "catalogue", "raw_class", "binary_class", "tags", "source_release"]
    list_filter = ["catalogue", "binary_class", "raw_class"]
    search_fields = ["material__reduced_formula", "material__mp_id", "material__materiae_id"]


@admin.register(models.Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "method", "seed", "content_hash", "counts", "created"]
    search_fields = ["name", "content_hash"]


@admin.register(models.SplitAssignment)
class SplitAssignmentAdmin(OfMaterialAdmin):
    list_display = ["id", "dataset", "material", "subset"]
    list_filter = ["dataset", "subset"]
    list_select_related = ["dataset", "material"]


class RetrainForm(forms.Form):
    kind = forms.ChoiceField(choices=models.ModelVersion.Kind.choices)
    hyperparameters = forms.JSONField(
        required=False,
        initial=dict,
        help_text='JSON object, e.g. {"epochs": 30, "learning_rate": 0.001}. Empty: the model\'s defaults.',
    )

    def clean_hyperparameters(self):
        value = self.cleaned_data.get("hyperparameters") or {}
        if not isinstance(value, dict):
            raise forms.ValidationError("hyperparameters must be a JSON object")
        return value

    def clean(self):
        cleaned = super().clean()
        if "kind" in cleaned and "hyperparameters" in cleaned:
            from mlcore.models import make_model

            try:
                make_model(cleaned["kind"], **cleaned["hyperparameters"])
            except ValueError as error:
                raise forms.ValidationError(str(error)) from None
        return cleaned


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "name",
        "status",
        "is_production",
        "threshold",
        "dataset",
        "split_hash_short",
        "code_version",
        "created",
    ]
    list_filter = ["kind", "status", "is_production"]
    search_fields = ["name", "split_hash", "dataset_hash"]
    readonly_fields = [
        "is_production",
        "artifact_sha256",
        "dataset_hash",
        "split_hash",
        "code_version",
        "library_versions",
        "metrics",
        "created",
    ]
    actions = ["retrain", "promote_to_production", "rescreen_all"]

    @admin.display(description="split hash")
    def split_hash_short(self, obj):
        return obj.split_hash[:10]

    @admin.action(description="Retrain (choose kind and hyperparameters)", permissions=["retrain"])
    def retrain(self, request, queryset):
        from materials.learning.training import request_training

        first = queryset.first()
        if "apply" in request.POST:
            form = RetrainForm(request.POST)
            if form.is_valid():
                run = request_training(
                    form.cleaned_data["kind"],
                    form.cleaned_data["hyperparameters"],
                    dataset=first.dataset if first else None,
                    user=request.user,
                )
                self.message_user(
                    request, f"Training of model {run.model_version_id} queued (run {run.pk}).", messages.SUCCESS
                )
                return None
        else:
            form = RetrainForm(initial={"kind": first.kind, "hyperparameters": first.hyperparameters})
        context = {
            **self.admin_site.each_context(request),
            "title": "Retrain a model",
            "form": form,
            "queryset": queryset,
            "action": "retrain",
            "opts": self.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return render(request, "admin/materials/retrain.html", context)

    @admin.action(description="Promote to production", permissions=["promote"])
    def promote_to_production(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model to promote.", messages.ERROR)
            return
        version = queryset.get()
        job = jobs.promote(version.pk, user=request.user)
        if job.status != models.Status.DONE:
            self.message_user(request, job.error, messages.ERROR)
            return
        self.message_user(request, f"{version} is now the production model.", messages.SUCCESS)

    @admin.action(description="Re-screen all materials with this model", permissions=["promote"])
    def rescreen_all(self, request, queryset):
        for version in queryset:
            if version.status != models.ModelVersion.State.READY:
                self.message_user(request, f"{version} is {version.status}; skipped.", messages.WARNING)
                continue
            job = jobs.start_classify_all(version, user=request.user)
            self.message_user(request, f"Classification job {job.pk} queued for {version}.", messages.SUCCESS)

    def has_retrain_permission(self, request):
        return request.user.is_staff and request.user.has_perm("materials.retrain_modelversion")

    def has_promote_permission(self, request):
        return request.user.is_staff and request.user.has_perm("materials.promote_modelversion")


@admin.register(models.TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "model_version", "status", "epoch", "total_epochs", "progress", "created", "finished"]
    list_filter = ["status"]
    readonly_fields = ["history", "error", "celery_task_id"]
    list_select_related = ["model_version"]


@admin.register(models.Prediction)
class PredictionAdmin(OfMaterialAdmin):
    list_display = ["id", "material", "model_version", "probability", "predicted_class", "created"]
    list_filter = ["predicted_class", "model_version"]
    search_fields = ["material__reduced_formula", "material__mp_id"]
    raw_id_fields = ["material", "model_version"]
    list_select_related = ["material", "model_version"]


@admin.register(models.ElementMetric)
class ElementMetricAdmin(admin.ModelAdmin):
    list_display = ["id", "model_version", "element", "subset", "target_class", "recall", "precision", "f1", "support"]
    list_filter = ["subset", "target_class", "model_version"]
    search_fields = ["element"]


@admin.register(models.ScreeningBatch)
class ScreeningBatchAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "status", "progress", "stage_counts", "model_version", "created"]
    list_filter = ["status"]
    search_fields = ["name", "source"]
    readonly_fields = ["stage_counts", "rejected", "error"]
    filter_horizontal = []
    raw_id_fields = ["materials"]


@admin.register(models.Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "status", "progress", "progress_message", "created", "finished"]
    list_filter = ["kind", "status"]
    readonly_fields = ["parameters", "result", "error", "celery_task_id"]
