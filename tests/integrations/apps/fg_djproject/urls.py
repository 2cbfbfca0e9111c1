from django.urls import path

from .fgapp import views

urlpatterns = [path("echo", views.echo)]
